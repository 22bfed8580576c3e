package cri

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/nri/pkg/api"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// What plugins are told of runclet's pods and apps, and how their
// container adjustments map onto an app's AppConfig.

// nriPodSandbox is a pod as NRI describes it. runclet has no sandbox
// process (no pause), so there is no pid, and the pod cgroup is kubelet's
// (or runclet's own) cgroup parent; the namespaces are the pinned ones.
// The runtime handler is the pod's flavor, as PodSandboxStatus shows it.
func nriPodSandbox(p *pod.Pod) *api.PodSandbox {
	ps := &api.PodSandbox{
		Id: p.ID, Name: p.Name, Uid: p.UID, Namespace: p.Namespace,
		Labels: copyMap(p.Labels), Annotations: copyMap(p.Annotations), RuntimeHandler: p.Flavor,
		Linux: &api.LinuxPodSandbox{CgroupParent: p.CgroupParent, CgroupsPath: p.CgroupParent, Namespaces: podNamespaces(p)},
	}
	if p.Attachment != nil {
		ps.Ips = p.Attachment.PodIPs()
	}
	return ps
}

// podNamespaces are the namespaces a pod pins; host ones are left out.
func podNamespaces(p *pod.Pod) []*api.LinuxNamespace {
	var out []*api.LinuxNamespace
	for _, ns := range []struct{ typ, path string }{
		{string(specs.NetworkNamespace), p.NetNS}, {string(specs.IPCNamespace), p.IPCNS},
		{string(specs.UTSNamespace), p.UTSNS}, {string(specs.PIDNamespace), p.PIDNS},
	} {
		if ns.path != "" {
			out = append(out, &api.LinuxNamespace{Type: ns.typ, Path: ns.path})
		}
	}
	return out
}

func nriState(s pod.AppState) api.ContainerState {
	switch s {
	case pod.AppCreated:
		return api.ContainerState_CONTAINER_CREATED
	case pod.AppRunning:
		return api.ContainerState_CONTAINER_RUNNING
	case pod.AppExited:
		return api.ContainerState_CONTAINER_STOPPED
	}
	return api.ContainerState_CONTAINER_UNKNOWN
}

// nriContainer is an app as NRI describes it: its record, and what its
// bundle's OCI spec says (sp nil: unreadable, left out).
func nriContainer(a *pod.App, sp *specs.Spec) *api.Container {
	c := &api.Container{
		Id: a.ID, PodSandboxId: a.PodID, Name: a.Name, State: nriState(a.State),
		Labels: copyMap(a.Labels), Annotations: copyMap(a.Annotations), Pid: uint32(max(a.Pid, 0)),
		CreatedAt: nanos(a.CreatedAt), StartedAt: nanos(a.StartedAt), FinishedAt: nanos(a.FinishedAt),
		ExitCode: int32(a.ExitCode), StatusReason: a.Reason, StatusMessage: a.Message,
		Image: &api.Image{Name: a.Image, ConfigDigest: a.ImageID.String()},
	}
	if _, dgst, ok := strings.Cut(a.ImageRef, "@"); ok {
		c.Image.Digest = dgst
	}
	if sp == nil {
		return c
	}
	if len(sp.Annotations) > 0 {
		// The bundle's annotations (runclet's own, and NRI's adjustments)
		// under the CRI ones.
		ann := maps.Clone(sp.Annotations)
		maps.Copy(ann, a.Annotations)
		c.Annotations = ann
	}
	c.Mounts = api.FromOCIMounts(sp.Mounts)
	c.Hooks = api.FromOCIHooks(sp.Hooks)
	c.Linux = &api.LinuxContainer{}
	if p := sp.Process; p != nil {
		c.Args, c.Env = slices.Clone(p.Args), slices.Clone(p.Env)
		for _, r := range p.Rlimits {
			c.Rlimits = append(c.Rlimits, &api.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
		}
		c.User = &api.User{Uid: p.User.UID, Gid: p.User.GID, AdditionalGids: slices.Clone(p.User.AdditionalGids)}
		c.Linux.OomScoreAdj = api.Int(p.OOMScoreAdj)
		c.Linux.IoPriority = api.FromOCILinuxIOPriority(p.IOPriority)
		c.Linux.Scheduler = api.FromOCILinuxScheduler(p.Scheduler)
	}
	if l := sp.Linux; l != nil {
		c.Linux.Namespaces = api.FromOCILinuxNamespaces(l.Namespaces)
		c.Linux.Devices = api.FromOCILinuxDevices(l.Devices)
		c.Linux.Resources = api.FromOCILinuxResources(l.Resources, nil)
		c.Linux.CgroupsPath = l.CgroupsPath
		c.Linux.Sysctl = copyMap(l.Sysctl)
		if l.Seccomp != nil {
			c.Linux.SeccompPolicy = api.FromOCILinuxSeccomp(l.Seccomp)
		}
	}
	return c
}

// configContainer is a container not made yet, as NRI describes it, from
// its AppConfig and its image's config (which the app's command and
// environment are resolved against, as spec.Generate will). It also
// returns the image's environment.
func (s *Server) configContainer(p *pod.Pod, id string, ac pod.AppConfig) (*api.Container, []string, error) {
	img, err := s.rt.GetImage(ac.Image)
	if err != nil {
		return nil, nil, err
	}
	ic, err := s.rt.ImageConfig(img)
	if err != nil {
		return nil, nil, err
	}
	sp := ac.Spec
	ann := maps.Clone(sp.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	maps.Copy(ann, ac.Annotations)
	c := &api.Container{
		Id: id, PodSandboxId: p.ID, Name: ac.Name, State: api.ContainerState_CONTAINER_CREATED,
		Labels: copyMap(ac.Labels), Annotations: ann, CreatedAt: time.Now().UnixNano(),
		Args: resolveArgs(ic.Config, sp), Env: mergeEnv(ic.Config.Env, sp.Env),
		Image: &api.Image{Name: ac.Image, ConfigDigest: img.ID.String()},
		Linux: &api.LinuxContainer{
			Namespaces: podNamespaces(p), Resources: nriFromResources(sp.Resources),
			OomScoreAdj: api.Int(sp.Resources.OOMScoreAdj), Sysctl: copyMap(sp.Sysctls),
		},
	}
	for _, m := range sp.Mounts {
		c.Mounts = append(c.Mounts, nriMount(m))
	}
	for _, d := range sp.Devices {
		c.Linux.Devices = append(c.Linux.Devices, nriDevice(d))
	}
	for _, r := range sp.Rlimits {
		c.Rlimits = append(c.Rlimits, &api.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return c, ic.Config.Env, nil
}

// resolveArgs applies Docker's and Kubernetes' rules as spec.Generate
// does: a command replaces ENTRYPOINT and drops CMD, args alone replace
// CMD.
func resolveArgs(img ocispec.ImageConfig, app spec.App) []string {
	switch {
	case len(app.Command) > 0:
		return append(slices.Clone(app.Command), app.Args...)
	case len(app.Args) > 0:
		return append(slices.Clone(img.Entrypoint), app.Args...)
	}
	return append(slices.Clone(img.Entrypoint), img.Cmd...)
}

// mergeEnv is base with over's entries replacing those of the same key.
func mergeEnv(base, over []string) []string {
	out := slices.Clone(base)
	for _, kv := range over {
		out = setEnv(out, kv)
	}
	return out
}

func setEnv(env []string, kv string) []string {
	key, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

func nriMount(m spec.Mount) *api.Mount {
	opts := []string{"rbind", "rw"}
	if m.Readonly {
		opts[1] = "ro"
	}
	if m.RecursiveReadOnly {
		opts = append(opts, "rro")
	}
	prop := m.Propagation
	if prop == "" {
		prop = spec.PropagationPrivate
	}
	return &api.Mount{Destination: m.ContainerPath, Source: m.HostPath, Type: "bind", Options: append(opts, string(prop))}
}

// specMount maps a mount a plugin adds: runclet's apps take bind mounts,
// with ro/rw, rro and propagation options.
func specMount(m *api.Mount) (spec.Mount, error) {
	bind := m.Type == "bind" || m.Type == "rbind"
	out := spec.Mount{HostPath: m.Source, ContainerPath: m.Destination}
	for _, o := range m.Options {
		switch o {
		case "bind", "rbind":
			bind = true
		case "ro":
			out.Readonly = true
		case "rw":
			out.Readonly = false
		case "rro":
			out.Readonly, out.RecursiveReadOnly = true, true
		case "private", "rprivate":
			out.Propagation = spec.PropagationPrivate
		case "slave", "rslave":
			out.Propagation = spec.PropagationHostToContainer
		case "shared", "rshared":
			out.Propagation = spec.PropagationBidirectional
		default:
			return out, notImplemented("NRI mount %s: mount option %q is", m.Destination, o)
		}
	}
	if !bind || (m.Type != "" && m.Type != "bind" && m.Type != "rbind") {
		return out, notImplemented("NRI mount %s of type %q (runclet takes bind mounts) is", m.Destination, m.Type)
	}
	if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Destination) {
		return out, errdefs.InvalidArgument("NRI mount %q on %q: both paths must be absolute", m.Source, m.Destination)
	}
	return out, nil
}

func nriDevice(d spec.Device) *api.LinuxDevice {
	path := d.ContainerPath
	if path == "" {
		path = d.HostPath
	}
	ld := &api.LinuxDevice{Path: path, Type: d.Type, Major: d.Major, Minor: d.Minor, Uid: api.UInt32(d.UID), Gid: api.UInt32(d.GID)}
	if d.FileMode != 0 {
		ld.FileMode = api.FileMode(d.FileMode)
	}
	return ld
}

// specDevice maps a device a plugin adds: a node at its path, allowed
// rwm in the device cgroup (as NRI's own OCI adjustment does).
func specDevice(d *api.LinuxDevice) spec.Device {
	out := spec.Device{HostPath: d.Path, ContainerPath: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor, Permissions: "rwm"}
	if m := d.FileMode.Get(); m != nil {
		out.FileMode = *m
	}
	if v := d.Uid.Get(); v != nil {
		out.UID = *v
	}
	if v := d.Gid.Get(); v != nil {
		out.GID = *v
	}
	return out
}

// nriFromResources is spec.Resources as NRI resources (zero: unset).
func nriFromResources(r spec.Resources) *api.LinuxResources {
	out := &api.LinuxResources{Memory: &api.LinuxMemory{}, Cpu: &api.LinuxCPU{Cpus: r.CPUsetCPUs, Mems: r.CPUsetMems}, Unified: copyMap(r.Unified)}
	if r.MemoryLimit != 0 {
		out.Memory.Limit = api.Int64(r.MemoryLimit)
	}
	if r.MemorySwapLimit != 0 {
		out.Memory.Swap = api.Int64(r.MemorySwapLimit)
	}
	if r.CPUShares != 0 {
		out.Cpu.Shares = api.UInt64(uint64(r.CPUShares))
	}
	if r.CPUQuota != 0 {
		out.Cpu.Quota = api.Int64(r.CPUQuota)
	}
	if r.CPUPeriod != 0 {
		out.Cpu.Period = api.UInt64(uint64(r.CPUPeriod))
	}
	for _, size := range slices.Sorted(maps.Keys(r.HugepageLimits)) {
		out.HugepageLimits = append(out.HugepageLimits, &api.HugepageLimit{PageSize: size, Limit: r.HugepageLimits[size]})
	}
	if r.PidsLimit != 0 {
		out.Pids = &api.LinuxPids{Limit: r.PidsLimit}
	}
	return out
}

// nriResources maps NRI resources onto spec.Resources (zero: unchanged)
// and names the fields runclet cannot apply. A memory limit without a
// swap limit limits swap to it where swap can be limited, as with
// CreateContainer and UpdateContainerResources.
func nriResources(r *api.LinuxResources, swapLimit bool) (spec.Resources, []string) {
	var out spec.Resources
	var bad []string
	if r == nil {
		return out, nil
	}
	refuse := func(set bool, name string) {
		if set {
			bad = append(bad, "linux.resources."+name)
		}
	}
	if m := r.Memory; m != nil {
		if v := m.Limit; v != nil {
			out.MemoryLimit = v.Value
		}
		if v := m.Swap; v != nil {
			out.MemorySwapLimit = v.Value
		}
		if out.MemorySwapLimit == 0 && out.MemoryLimit > 0 && swapLimit {
			out.MemorySwapLimit = out.MemoryLimit
		}
		refuse(m.Reservation != nil, "memory.reservation")
		refuse(m.Kernel != nil, "memory.kernel")
		refuse(m.KernelTcp != nil, "memory.kernel_tcp")
		refuse(m.Swappiness != nil, "memory.swappiness")
		refuse(m.DisableOomKiller != nil, "memory.disable_oom_killer")
		refuse(m.UseHierarchy != nil, "memory.use_hierarchy")
	}
	if c := r.Cpu; c != nil {
		if v := c.Shares; v != nil {
			out.CPUShares = int64(v.Value)
		}
		if v := c.Quota; v != nil {
			out.CPUQuota = v.Value
		}
		if v := c.Period; v != nil {
			out.CPUPeriod = int64(v.Value)
		}
		out.CPUsetCPUs, out.CPUsetMems = c.Cpus, c.Mems
		refuse(c.RealtimeRuntime != nil, "cpu.realtime_runtime")
		refuse(c.RealtimePeriod != nil, "cpu.realtime_period")
	}
	for _, h := range r.HugepageLimits {
		if out.HugepageLimits == nil {
			out.HugepageLimits = map[string]uint64{}
		}
		out.HugepageLimits[h.PageSize] = h.Limit
	}
	if len(r.Unified) > 0 {
		out.Unified = maps.Clone(r.Unified)
	}
	if p := r.Pids; p != nil {
		out.PidsLimit = p.Limit
	}
	refuse(r.BlockioClass != nil, "blockio_class")
	refuse(r.RdtClass != nil, "rdt_class")
	refuse(len(r.Devices) > 0, "devices")
	return out, bad
}

// hasResources reports whether r sets anything runclet applies.
func hasResources(r *api.LinuxResources) bool {
	res, _ := nriResources(r, false)
	return res.CPUShares != 0 || res.CPUQuota != 0 || res.CPUPeriod != 0 || res.CPUsetCPUs != "" || res.CPUsetMems != "" ||
		res.MemoryLimit != 0 || res.MemorySwapLimit != 0 || res.PidsLimit != 0 || len(res.HugepageLimits) > 0 || len(res.Unified) > 0
}

// mergeResources sets in dst what src sets.
func mergeResources(dst *spec.Resources, src spec.Resources) {
	for _, f := range []struct {
		dst *int64
		src int64
	}{
		{&dst.CPUShares, src.CPUShares}, {&dst.CPUQuota, src.CPUQuota}, {&dst.CPUPeriod, src.CPUPeriod},
		{&dst.MemoryLimit, src.MemoryLimit}, {&dst.MemorySwapLimit, src.MemorySwapLimit}, {&dst.PidsLimit, src.PidsLimit},
	} {
		if f.src != 0 {
			*f.dst = f.src
		}
	}
	if src.CPUsetCPUs != "" {
		dst.CPUsetCPUs = src.CPUsetCPUs
	}
	if src.CPUsetMems != "" {
		dst.CPUsetMems = src.CPUsetMems
	}
	if len(src.HugepageLimits) > 0 {
		dst.HugepageLimits = maps.Clone(dst.HugepageLimits)
		if dst.HugepageLimits == nil {
			dst.HugepageLimits = map[string]uint64{}
		}
		maps.Copy(dst.HugepageLimits, src.HugepageLimits)
	}
	if len(src.Unified) > 0 {
		dst.Unified = maps.Clone(dst.Unified)
		if dst.Unified == nil {
			dst.Unified = map[string]string{}
		}
		maps.Copy(dst.Unified, src.Unified)
	}
}

// nriSnapshot is what a container plugins are asked about has, to find
// what they removed: NRI's merged adjustment leaves out removals of
// environment variables, devices and sysctls (it applies them to the
// request's container only).
type nriSnapshot struct{ env, devices, sysctls []string }

// nriRemoved are the environment variables (keys), devices (paths) and
// sysctls plugins removed.
type nriRemoved nriSnapshot

func snapshotOf(c *api.Container) nriSnapshot {
	var s nriSnapshot
	for _, kv := range c.GetEnv() {
		k, _, _ := strings.Cut(kv, "=")
		s.env = append(s.env, k)
	}
	for _, d := range c.GetLinux().GetDevices() {
		s.devices = append(s.devices, d.Path)
	}
	s.sysctls = slices.Collect(maps.Keys(c.GetLinux().GetSysctl()))
	return s
}

// removed compares the snapshot with the container NRI left.
func (s nriSnapshot) removed(after *api.Container) nriRemoved {
	now := snapshotOf(after)
	gone := func(was, is []string) []string {
		var out []string
		for _, x := range was {
			if !slices.Contains(is, x) {
				out = append(out, x)
			}
		}
		return out
	}
	return nriRemoved{env: gone(s.env, now.env), devices: gone(s.devices, now.devices), sysctls: gone(s.sysctls, now.sysctls)}
}

// unsupportedAdjustments names the fields of adj (and removals) runclet
// cannot apply; afterCreate: the container already exists, so only cgroup
// resources can still change.
func unsupportedAdjustments(adj *api.ContainerAdjustment, rm nriRemoved, afterCreate bool) []string {
	if adj == nil {
		return nil
	}
	var bad []string
	refuse := func(set bool, name string) {
		if set {
			bad = append(bad, name)
		}
	}
	if afterCreate {
		refuse(len(adj.Annotations) > 0, "annotations")
		refuse(len(adj.Mounts) > 0, "mounts")
		refuse(len(adj.Env) > 0 || len(rm.env) > 0, "env")
		refuse(len(adj.Args) > 0, "args")
		refuse(len(adj.Rlimits) > 0, "rlimits")
		refuse(len(adj.GetLinux().GetDevices()) > 0 || len(rm.devices) > 0, "linux.devices")
		refuse(len(adj.GetLinux().GetSysctl()) > 0 || len(rm.sysctls) > 0, "linux.sysctl")
	}
	h := adj.Hooks
	refuse(len(h.GetPrestart())+len(h.GetCreateRuntime())+len(h.GetCreateContainer())+len(h.GetStartContainer())+
		len(h.GetPoststart())+len(h.GetPoststop()) > 0, "hooks")
	refuse(len(adj.CDIDevices) > 0, "CDI_devices")
	if l := adj.Linux; l != nil {
		refuse(afterCreate && l.OomScoreAdj != nil, "linux.oom_score_adj")
		refuse(l.CgroupsPath != "", "linux.cgroups_path")
		refuse(l.IoPriority != nil, "linux.io_priority")
		refuse(l.SeccompPolicy != nil, "linux.seccomp_policy")
		refuse(len(l.Namespaces) > 0, "linux.namespaces")
		refuse(len(l.NetDevices) > 0, "linux.net_devices")
		refuse(l.Scheduler != nil, "linux.scheduler")
		refuse(l.Rdt.GetRemove() || l.Rdt.GetClosId() != nil || l.Rdt.GetSchemata() != nil || l.Rdt.GetEnableMonitoring() != nil, "linux.rdt")
		refuse(l.MemoryPolicy != nil, "linux.memory_policy")
		_, rbad := nriResources(l.Resources, false)
		bad = append(bad, rbad...)
	}
	return bad
}

// unsupportedNRI is the error for adjustments runclet cannot apply.
func unsupportedNRI(fields []string) error {
	return notImplemented("applying NRI adjustments of %s is", strings.Join(fields, ", "))
}

// adjustAppConfig applies plugins' adjustments (NRI's merged result,
// with "-"-marked removals, and the removals rm it leaves out) to an app
// not made yet: annotations (the OCI spec's), mounts, environment, args
// (the whole command line), rlimits, devices, cgroup resources,
// oom_score_adj and sysctls. Anything else is refused, naming the
// fields. imageEnv is the image's environment, whose entries can be
// overridden but not removed.
func adjustAppConfig(ac *pod.AppConfig, adj *api.ContainerAdjustment, rm nriRemoved, imageEnv []string, swapLimit bool) error {
	if adj == nil {
		return nil
	}
	if bad := unsupportedAdjustments(adj, rm, false); len(bad) > 0 {
		return unsupportedNRI(bad)
	}
	for _, k := range rm.env {
		adj.Env = append(adj.Env, &api.KeyValue{Key: api.MarkForRemoval(k)})
	}
	if len(rm.devices) > 0 || len(rm.sysctls) > 0 {
		if adj.Linux == nil {
			adj.Linux = &api.LinuxContainerAdjustment{}
		}
		for _, d := range rm.devices {
			adj.Linux.Devices = append([]*api.LinuxDevice{{Path: api.MarkForRemoval(d)}}, adj.Linux.Devices...)
		}
		if len(rm.sysctls) > 0 && adj.Linux.Sysctl == nil {
			adj.Linux.Sysctl = map[string]string{}
		}
		for _, k := range rm.sysctls {
			adj.Linux.Sysctl[api.MarkForRemoval(k)] = ""
		}
	}
	sp := &ac.Spec

	if len(adj.Annotations) > 0 {
		ann := maps.Clone(sp.Annotations)
		if ann == nil {
			ann = map[string]string{}
		}
		for k := range adj.Annotations {
			if key, del := api.IsMarkedForRemoval(k); del {
				delete(ann, key)
			}
		}
		for k, v := range adj.Annotations {
			if _, del := api.IsMarkedForRemoval(k); !del {
				ann[k] = v
			}
		}
		sp.Annotations = ann
	}

	if len(adj.Mounts) > 0 {
		mounts := slices.Clone(sp.Mounts)
		for _, m := range adj.Mounts {
			dest, del := m.IsMarkedForRemoval()
			mounts = slices.DeleteFunc(mounts, func(x spec.Mount) bool { return filepath.Clean(x.ContainerPath) == filepath.Clean(dest) })
			if del {
				continue
			}
			sm, err := specMount(m)
			if err != nil {
				return err
			}
			mounts = append(mounts, sm)
		}
		sp.Mounts = mounts
	}

	if len(adj.Env) > 0 {
		env := slices.Clone(sp.Env)
		for _, e := range adj.Env {
			key, del := e.IsMarkedForRemoval()
			if !del {
				continue
			}
			if slices.ContainsFunc(imageEnv, func(kv string) bool { k, _, _ := strings.Cut(kv, "="); return k == key }) {
				return notImplemented("removing the image's environment variable %s (NRI env adjustment) is", key)
			}
			env = slices.DeleteFunc(env, func(kv string) bool { k, _, _ := strings.Cut(kv, "="); return k == key })
		}
		for _, e := range adj.Env {
			if _, del := e.IsMarkedForRemoval(); !del {
				env = setEnv(env, e.ToOCI())
			}
		}
		sp.Env = env
	}

	if len(adj.Args) > 0 {
		// The whole command line: it replaces ENTRYPOINT and CMD.
		sp.Command, sp.Args = slices.Clone(adj.Args), nil
	}

	for _, r := range adj.Rlimits {
		rl := specs.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft}
		if i := slices.IndexFunc(sp.Rlimits, func(x specs.POSIXRlimit) bool { return x.Type == r.Type }); i >= 0 {
			sp.Rlimits = slices.Clone(sp.Rlimits)
			sp.Rlimits[i] = rl
		} else {
			sp.Rlimits = append(slices.Clip(sp.Rlimits), rl)
		}
	}

	l := adj.Linux
	if l == nil {
		return nil
	}
	if len(l.Devices) > 0 {
		devs := slices.Clone(sp.Devices)
		for _, d := range l.Devices {
			path, del := d.IsMarkedForRemoval()
			devs = slices.DeleteFunc(devs, func(x spec.Device) bool {
				cp := x.ContainerPath
				if cp == "" {
					cp = x.HostPath
				}
				return cp == path
			})
			if !del {
				devs = append(devs, specDevice(d))
			}
		}
		sp.Devices = devs
	}
	res, _ := nriResources(l.Resources, swapLimit)
	mergeResources(&sp.Resources, res)
	if v := l.OomScoreAdj.Get(); v != nil {
		adjv := max(-1000, min(1000, *v))
		sp.Resources.OOMScoreAdj = &adjv
	}
	if len(l.Sysctl) > 0 {
		sysctls := maps.Clone(sp.Sysctls)
		if sysctls == nil {
			sysctls = map[string]string{}
		}
		for k := range l.Sysctl {
			if key, del := api.IsMarkedForRemoval(k); del {
				delete(sysctls, key)
			}
		}
		for k, v := range l.Sysctl {
			if _, del := api.IsMarkedForRemoval(k); !del {
				sysctls[k] = v
			}
		}
		sp.Sysctls = sysctls
	}
	return nil
}
