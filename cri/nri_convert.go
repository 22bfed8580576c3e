package cri

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// What plugins are told of runclet's pods and apps, and how their
// container adjustments apply to an app's OCI spec.

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

// unsupportedAdjustments names the fields of adj runclet cannot apply.
func unsupportedAdjustments(adj *api.ContainerAdjustment) []string {
	var bad []string
	refuse := func(set bool, name string) {
		if set {
			bad = append(bad, name)
		}
	}
	h := adj.Hooks
	refuse(len(h.GetPrestart())+len(h.GetCreateRuntime())+len(h.GetCreateContainer())+len(h.GetStartContainer())+
		len(h.GetPoststart())+len(h.GetPoststop()) > 0, "hooks")
	refuse(len(adj.CDIDevices) > 0, "CDI_devices")
	if l := adj.Linux; l != nil {
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

// adjustSpec applies plugins' adjustments (NRI's merged result, with
// "-"-marked removals, and the removals rm it leaves out) to an app's
// generated spec: annotations, mounts (as given, the rootfs propagation
// raised as a shared or slave one needs), environment, args (the whole
// command line), rlimits, devices (allowed rwm in the device cgroup),
// cgroup resources, oom_score_adj and sysctls. Anything else is refused,
// naming the fields. A memory limit without a swap limit limits swap to
// it where swap can be limited, as with CreateContainer and
// UpdateContainerResources.
func adjustSpec(sp *specs.Spec, adj *api.ContainerAdjustment, rm nriRemoved, swapLimit bool) error {
	if adj == nil {
		adj = &api.ContainerAdjustment{}
	}
	if bad := unsupportedAdjustments(adj); len(bad) > 0 {
		return unsupportedNRI(bad)
	}
	if sp.Process == nil || sp.Linux == nil {
		return errdefs.InvalidArgument("NRI adjustments: the spec has no process or no linux section")
	}
	p, l := sp.Process, sp.Linux
	sp.Annotations = editMap(sp.Annotations, adj.Annotations, nil)

	for _, m := range adj.Mounts {
		dest, del := m.IsMarkedForRemoval()
		sp.Mounts = slices.DeleteFunc(sp.Mounts, func(x specs.Mount) bool { return filepath.Clean(x.Destination) == filepath.Clean(dest) })
		if del {
			continue
		}
		prop := ""
		sp.Mounts = append(sp.Mounts, m.ToOCI(&prop))
		if prop == "rshared" || prop == "rslave" && l.RootfsPropagation != "rshared" {
			l.RootfsPropagation = prop
		}
	}

	gone := rm.env
	for _, e := range adj.Env {
		if key, del := e.IsMarkedForRemoval(); del {
			gone = append(gone, key)
		}
	}
	envKey := func(kv string) string { k, _, _ := strings.Cut(kv, "="); return k }
	p.Env = slices.DeleteFunc(p.Env, func(kv string) bool { return slices.Contains(gone, envKey(kv)) })
	for _, e := range adj.Env {
		if _, del := e.IsMarkedForRemoval(); del {
			continue
		}
		if i := slices.IndexFunc(p.Env, func(kv string) bool { return envKey(kv) == e.Key }); i >= 0 {
			p.Env[i] = e.ToOCI()
		} else {
			p.Env = append(p.Env, e.ToOCI())
		}
	}
	if len(adj.Args) > 0 {
		p.Args = slices.Clone(adj.Args)
	}
	for _, r := range adj.Rlimits {
		p.Rlimits = slices.DeleteFunc(p.Rlimits, func(x specs.POSIXRlimit) bool { return x.Type == r.Type })
		p.Rlimits = append(p.Rlimits, specs.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}

	la := adj.Linux
	if l.Resources == nil {
		l.Resources = &specs.LinuxResources{}
	}
	for _, d := range append(deviceRemovals(rm.devices), la.GetDevices()...) {
		path, del := d.IsMarkedForRemoval()
		for _, x := range l.Devices { // the node goes with the rule that allows it
			if x.Path == path {
				l.Resources.Devices = slices.DeleteFunc(l.Resources.Devices, func(r specs.LinuxDeviceCgroup) bool {
					return r.Allow && r.Type == x.Type && r.Major != nil && *r.Major == x.Major && r.Minor != nil && *r.Minor == x.Minor
				})
			}
		}
		l.Devices = slices.DeleteFunc(l.Devices, func(x specs.LinuxDevice) bool { return x.Path == path })
		if !del {
			l.Devices = append(l.Devices, d.ToOCI())
			l.Resources.Devices = append(l.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: d.Type, Major: &d.Major, Minor: &d.Minor, Access: "rwm"})
		}
	}
	if r := la.GetResources(); r != nil {
		// Mapped as updates are: zero is unchanged, spec's checks apply.
		nr, _ := nriResources(r, swapLimit)
		res, err := spec.LinuxResources(nr)
		if err != nil {
			return err
		}
		l.Resources = spec.MergeResources(l.Resources, res)
	}
	if v := la.GetOomScoreAdj().Get(); v != nil {
		adjv := max(-1000, min(1000, *v))
		p.OOMScoreAdj = &adjv
	}
	l.Sysctl = editMap(l.Sysctl, la.GetSysctl(), rm.sysctls)
	return nil
}

// deviceRemovals are "-"-marked devices for the paths plugins removed.
func deviceRemovals(paths []string) []*api.LinuxDevice {
	var out []*api.LinuxDevice
	for _, p := range paths {
		out = append(out, &api.LinuxDevice{Path: api.MarkForRemoval(p)})
	}
	return out
}

// editMap applies an NRI map adjustment ("-"-marked keys removed, the
// others set) and removes the keys in gone; m is not changed.
func editMap(m, adj map[string]string, gone []string) map[string]string {
	if len(adj) == 0 && len(gone) == 0 {
		return m
	}
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	for _, k := range gone {
		delete(out, k)
	}
	for k := range adj {
		if key, del := api.IsMarkedForRemoval(k); del {
			delete(out, key)
		}
	}
	for k, v := range adj {
		if _, del := api.IsMarkedForRemoval(k); !del {
			out[k] = v
		}
	}
	return out
}
