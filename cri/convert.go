package cri

import (
	"maps"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// This file maps CRI messages to runclet's requests and records back to
// CRI messages. Everything here is a pure function.

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// podConfig maps a validated PodSandboxConfig to a pod request.
func podConfig(c *runtimeapi.PodSandboxConfig, flavor string) (pod.PodConfig, error) {
	md := c.GetMetadata()
	pc := pod.PodConfig{
		Name: md.Name, Namespace: md.Namespace, UID: md.Uid, Attempt: md.Attempt,
		Hostname: c.Hostname, Flavor: flavor, Labels: copyMap(c.Labels), Annotations: copyMap(c.Annotations),
		LogDirectory: c.LogDirectory,
	}
	if dns := c.GetDnsConfig(); dns != nil {
		pc.DNS = &pod.DNSConfig{Servers: dns.Servers, Searches: dns.Searches, Options: dns.Options}
	}
	for _, pm := range c.PortMappings {
		if pm.HostPort <= 0 {
			continue // declared, not published
		}
		pc.Ports = append(pc.Ports, network.PortMapping{
			Protocol: strings.ToLower(pm.Protocol.String()), ContainerPort: pm.ContainerPort,
			HostPort: pm.HostPort, HostIP: pm.HostIp,
		})
	}
	l := c.GetLinux()
	if l == nil {
		return pc, nil
	}
	pc.CgroupParent = l.CgroupParent
	pc.Sysctls = copyMap(l.Sysctls)
	ns := l.GetSecurityContext().GetNamespaceOptions()
	if ns == nil {
		return pc, nil
	}
	switch ns.Network {
	case runtimeapi.NamespaceMode_NODE:
		pc.HostNetwork = true
	case runtimeapi.NamespaceMode_POD:
	default:
		return pc, errdefs.InvalidArgument("sandbox network namespace mode %s: want POD or NODE", ns.Network)
	}
	switch ns.Ipc {
	case runtimeapi.NamespaceMode_NODE:
		pc.HostIPC = true
	case runtimeapi.NamespaceMode_POD:
	default:
		return pc, errdefs.InvalidArgument("sandbox IPC namespace mode %s: want POD or NODE", ns.Ipc)
	}
	switch ns.Pid {
	case runtimeapi.NamespaceMode_NODE:
		pc.HostPID = true
	case runtimeapi.NamespaceMode_CONTAINER:
	case runtimeapi.NamespaceMode_POD:
		pc.SharePID = true
	default:
		return pc, errdefs.InvalidArgument("sandbox PID namespace mode %s: want CONTAINER, POD or NODE", ns.Pid)
	}
	if u := ns.GetUsernsOptions(); u != nil {
		switch u.Mode {
		case runtimeapi.NamespaceMode_NODE:
		case runtimeapi.NamespaceMode_POD:
			pc.UserNS = &pod.UserNSConfig{UIDMap: idMappings(u.Uids), GIDMap: idMappings(u.Gids)}
			if err := pc.UserNS.Validate(); err != nil {
				return pc, err
			}
		default:
			return pc, errdefs.InvalidArgument("sandbox user namespace mode %s: want POD or NODE", u.Mode)
		}
	}
	return pc, nil
}

// checkContainerNamespaces checks a container's namespace options against
// its pod: a container cannot get a host namespace its pod does not have.
// A container of a fly pod is in every host namespace, so it must not ask
// for one of its own.
func checkContainerNamespaces(ns *runtimeapi.NamespaceOption, p *pod.Pod) error {
	if ns == nil {
		return nil
	}
	if p.Flavor == pod.FlavorFly && (ns.Network != runtimeapi.NamespaceMode_NODE || ns.Pid != runtimeapi.NamespaceMode_NODE || ns.Ipc != runtimeapi.NamespaceMode_NODE) {
		return errdefs.InvalidArgument("container asks for namespaces network %s, PID %s, IPC %s, but pod %s is of flavor fly: its containers are in the host's (NODE)", ns.Network, ns.Pid, ns.Ipc, p.ID)
	}
	if ns.Network == runtimeapi.NamespaceMode_NODE && !p.HostNetwork {
		return errdefs.InvalidArgument("container asks for the host network but pod %s has its own", p.ID)
	}
	if ns.Ipc == runtimeapi.NamespaceMode_NODE && !p.HostIPC {
		return errdefs.InvalidArgument("container asks for the host IPC namespace but pod %s has its own", p.ID)
	}
	switch ns.Pid {
	case runtimeapi.NamespaceMode_NODE:
		if !p.HostPID {
			return errdefs.InvalidArgument("container asks for the host PID namespace but pod %s has none", p.ID)
		}
	case runtimeapi.NamespaceMode_POD:
		if !p.HostPID && !p.SharePID {
			return errdefs.InvalidArgument("container asks for the pod's PID namespace but pod %s does not share one", p.ID)
		}
	case runtimeapi.NamespaceMode_TARGET:
		return notImplemented("joining another container's PID namespace (namespace mode TARGET, ephemeral debug containers) is")
	}
	// A container lives in its pod's user namespace, whatever it asks.
	if u := ns.GetUsernsOptions(); u != nil {
		switch {
		case u.Mode == runtimeapi.NamespaceMode_NODE && p.IDMap != nil:
			return errdefs.InvalidArgument("container asks for the host user namespace but pod %s has its own", p.ID)
		case u.Mode == runtimeapi.NamespaceMode_POD && p.IDMap == nil:
			return errdefs.InvalidArgument("container asks for the pod's user namespace but pod %s has none", p.ID)
		case u.Mode != runtimeapi.NamespaceMode_NODE && u.Mode != runtimeapi.NamespaceMode_POD:
			return errdefs.InvalidArgument("container user namespace mode %s: want POD or NODE", u.Mode)
		}
	}
	return nil
}

// mounts maps CRI mounts to spec mounts and image volumes.
func mounts(in []*runtimeapi.Mount, rro bool) ([]spec.Mount, []pod.ImageVolumeConfig, error) {
	var out []spec.Mount
	var vols []pod.ImageVolumeConfig
	for _, m := range in {
		if len(m.MountOptions) > 0 {
			return nil, nil, notImplemented("extra bind mount options (%v on %s) are", m.MountOptions, m.ContainerPath)
		}
		if m.RecursiveReadOnly && !rro {
			return nil, nil, errdefs.InvalidArgument("mount %s: recursive read-only mounts need Linux 5.12 or later", m.ContainerPath)
		}
		if m.Image != nil {
			// Image volumes are read-only (KEP-4639); kubelet always asks so.
			if !m.Readonly {
				return nil, nil, errdefs.InvalidArgument("image volume %s must be read-only", m.ContainerPath)
			}
			if m.Image.Image == "" {
				return nil, nil, errdefs.InvalidArgument("image volume %s names no image", m.ContainerPath)
			}
			vols = append(vols, pod.ImageVolumeConfig{Image: m.Image.Image, SubPath: m.ImageSubPath, ContainerPath: m.ContainerPath, Propagation: propagation(m.Propagation)})
			continue
		}
		sm := spec.Mount{
			HostPath: m.HostPath, ContainerPath: m.ContainerPath, Readonly: m.Readonly,
			RecursiveReadOnly: m.RecursiveReadOnly, SELinuxRelabel: m.SelinuxRelabel,
			UIDMappings: idMappings(m.UidMappings), GIDMappings: idMappings(m.GidMappings),
		}
		sm.Propagation = propagation(m.Propagation)
		out = append(out, sm)
	}
	return out, vols, nil
}

func propagation(p runtimeapi.MountPropagation) spec.Propagation {
	switch p {
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		return spec.PropagationHostToContainer
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		return spec.PropagationBidirectional
	}
	return spec.PropagationPrivate
}

func idMappings(in []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	var out []specs.LinuxIDMapping
	for _, m := range in {
		out = append(out, specs.LinuxIDMapping{ContainerID: m.ContainerId, HostID: m.HostId, Size: m.Length})
	}
	return out
}

// criMounts maps an app's recorded mounts back to CRI mounts.
func criMounts(in []spec.Mount) []*runtimeapi.Mount {
	var out []*runtimeapi.Mount
	for _, m := range in {
		cm := &runtimeapi.Mount{
			ContainerPath: m.ContainerPath, HostPath: m.HostPath, Readonly: m.Readonly,
			SelinuxRelabel: m.SELinuxRelabel, RecursiveReadOnly: m.RecursiveReadOnly,
		}
		switch m.Propagation {
		case spec.PropagationHostToContainer, "slave":
			cm.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
		case spec.PropagationBidirectional, "shared":
			cm.Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
		}
		for _, u := range m.UIDMappings {
			cm.UidMappings = append(cm.UidMappings, &runtimeapi.IDMapping{ContainerId: u.ContainerID, HostId: u.HostID, Length: u.Size})
		}
		for _, g := range m.GIDMappings {
			cm.GidMappings = append(cm.GidMappings, &runtimeapi.IDMapping{ContainerId: g.ContainerID, HostId: g.HostID, Length: g.Size})
		}
		out = append(out, cm)
	}
	return out
}

// criImageVolumes reports image volumes with the image digest they were
// made from (ImageSpec.image_ref).
func criImageVolumes(in []pod.ImageVolume) []*runtimeapi.Mount {
	var out []*runtimeapi.Mount
	for _, v := range in {
		out = append(out, &runtimeapi.Mount{
			ContainerPath: v.ContainerPath, Readonly: true, ImageSubPath: v.SubPath,
			Image: &runtimeapi.ImageSpec{Image: v.Image, ImageRef: v.ImageRef},
		})
	}
	return out
}

// resources maps CRI Linux resources to the spec's.
func resources(r *runtimeapi.LinuxContainerResources, f Features) spec.Resources {
	if r == nil {
		return spec.Resources{}
	}
	out := spec.Resources{
		CPUShares: r.CpuShares, CPUQuota: r.CpuQuota, CPUPeriod: r.CpuPeriod,
		CPUsetCPUs: r.CpusetCpus, CPUsetMems: r.CpusetMems,
		MemoryLimit: r.MemoryLimitInBytes, MemorySwapLimit: r.MemorySwapLimitInBytes,
		Unified: copyMap(r.Unified),
	}
	// As containerd: no swap unless asked, where swap can be limited.
	if out.MemorySwapLimit == 0 && out.MemoryLimit > 0 && f.SwapLimit {
		out.MemorySwapLimit = out.MemoryLimit
	}
	for _, h := range r.HugepageLimits {
		if !f.Hugetlb {
			break // see Features.Hugetlb
		}
		if out.HugepageLimits == nil {
			out.HugepageLimits = map[string]uint64{}
		}
		out.HugepageLimits[h.PageSize] = h.Limit
	}
	if r.OomScoreAdj != 0 {
		v := int(max(-1000, min(1000, r.OomScoreAdj)))
		out.OOMScoreAdj = &v
	}
	return out
}

// seccomp maps the container's seccomp settings; unset means Unconfined,
// as the CRI defines (kubelet always says what it wants).
func seccomp(sc *runtimeapi.LinuxContainerSecurityContext) (spec.SeccompProfile, error) {
	if p := sc.GetSeccomp(); p != nil {
		switch p.ProfileType {
		case runtimeapi.SecurityProfile_RuntimeDefault:
			return spec.SeccompProfile{Kind: spec.SeccompRuntimeDefault}, nil
		case runtimeapi.SecurityProfile_Localhost:
			return spec.SeccompProfile{Kind: spec.SeccompLocalhost, LocalhostPath: p.LocalhostRef}, nil
		}
		return spec.SeccompProfile{Kind: spec.SeccompUnconfined}, nil
	}
	switch path := sc.GetSeccompProfilePath(); {
	case path == "" || path == "unconfined":
		return spec.SeccompProfile{Kind: spec.SeccompUnconfined}, nil
	case path == "runtime/default" || path == "docker/default":
		return spec.SeccompProfile{Kind: spec.SeccompRuntimeDefault}, nil
	case strings.HasPrefix(path, "localhost//"):
		return spec.SeccompProfile{Kind: spec.SeccompLocalhost, LocalhostPath: strings.TrimPrefix(path, "localhost/")}, nil
	}
	return spec.SeccompProfile{}, errdefs.InvalidArgument("seccomp profile %q: want runtime/default, unconfined or localhost/<absolute path>", sc.GetSeccompProfilePath())
}

// apparmor maps the container's AppArmor settings to a profile name. Where
// AppArmor is enabled, RuntimeDefault, and no setting at all (as in
// containerd, after kubernetes#51746), is spec.AppArmorDefaultProfile,
// which the caller loads; elsewhere it is no profile.
func apparmor(sc *runtimeapi.LinuxContainerSecurityContext, enabled bool) (string, error) {
	name := spec.AppArmorDefaultProfile
	if p := sc.GetApparmor(); p != nil {
		switch p.ProfileType {
		case runtimeapi.SecurityProfile_Localhost:
			name = p.LocalhostRef
		case runtimeapi.SecurityProfile_Unconfined:
			name = ""
		}
	} else if path := sc.GetApparmorProfile(); path == "unconfined" {
		name = ""
	} else if path != "" && path != "runtime/default" {
		if !strings.HasPrefix(path, "localhost/") || path == "localhost/" {
			return "", errdefs.InvalidArgument("apparmor profile %q: want runtime/default, unconfined or localhost/<name>", path)
		}
		name = strings.TrimPrefix(path, "localhost/")
	}
	if !enabled {
		if name != "" && name != spec.AppArmorDefaultProfile {
			return "", errdefs.FailedPrecondition("apparmor profile %q requested, but AppArmor is not enabled on this host", name)
		}
		return "", nil
	}
	return name, nil
}

// nanos is t in Unix nanoseconds, 0 for the zero time ("not set").
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// sandboxState is READY for a ready pod whose supervisor and pid
// namespace holder still run (Broken says they do not; so does an app in
// state unknown).
func sandboxState(p *pod.Pod, ctrs []*containerEntry) runtimeapi.PodSandboxState {
	if p.State != pod.PodReady || p.Broken != "" {
		return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	for _, c := range ctrs {
		if c.app.State == pod.AppUnknown {
			return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		}
	}
	return runtimeapi.PodSandboxState_SANDBOX_READY
}

func sandboxMetadata(p *pod.Pod) *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Name: p.Name, Uid: p.UID, Namespace: p.Namespace, Attempt: p.Attempt}
}

func criSandbox(v sandboxView) *runtimeapi.PodSandbox {
	p := v.pod
	return &runtimeapi.PodSandbox{
		Id: p.ID, Metadata: sandboxMetadata(p), State: sandboxState(p, v.containers),
		CreatedAt: p.CreatedAt.UnixNano(), Labels: copyMap(p.Labels), Annotations: copyMap(p.Annotations),
		RuntimeHandler: p.Flavor,
	}
}

func nsMode(host bool, own runtimeapi.NamespaceMode) runtimeapi.NamespaceMode {
	if host {
		return runtimeapi.NamespaceMode_NODE
	}
	return own
}

func podPidMode(p *pod.Pod) runtimeapi.NamespaceMode {
	if p.SharePID {
		return runtimeapi.NamespaceMode_POD
	}
	return runtimeapi.NamespaceMode_CONTAINER
}

func criUserNS(p *pod.Pod) *runtimeapi.UserNamespace {
	if p.IDMap == nil {
		return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
	}
	u := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}
	for _, m := range p.IDMap.UIDMap {
		u.Uids = append(u.Uids, &runtimeapi.IDMapping{ContainerId: m.ContainerID, HostId: m.HostID, Length: m.Size})
	}
	for _, m := range p.IDMap.GIDMap {
		u.Gids = append(u.Gids, &runtimeapi.IDMapping{ContainerId: m.ContainerID, HostId: m.HostID, Length: m.Size})
	}
	return u
}

func criSandboxStatus(v sandboxView) *runtimeapi.PodSandboxStatus {
	p := v.pod
	// The modes the pod has: NODE for everything a fly pod shares with the
	// host, whatever its config said (RunPodSandbox refuses fly pods that
	// ask for isolation, so for them the two agree).
	st := &runtimeapi.PodSandboxStatus{
		Id: p.ID, Metadata: sandboxMetadata(p), State: sandboxState(p, v.containers),
		CreatedAt: p.CreatedAt.UnixNano(), Labels: copyMap(p.Labels), Annotations: copyMap(p.Annotations),
		RuntimeHandler: p.Flavor,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network:       nsMode(p.HostNetwork, runtimeapi.NamespaceMode_POD),
			Pid:           nsMode(p.HostPID, podPidMode(p)),
			Ipc:           nsMode(p.HostIPC, runtimeapi.NamespaceMode_POD),
			UsernsOptions: criUserNS(p),
		}}},
	}
	if p.Attachment == nil && len(p.HostIPs) > 0 {
		st.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: p.HostIPs[0]}
		for _, ip := range p.HostIPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	if p.Attachment != nil {
		if ips := p.Attachment.PodIPs(); len(ips) > 0 {
			st.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: ips[0]}
			for _, ip := range ips[1:] {
				st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
			}
		}
	}
	if st.Network == nil {
		st.Network = &runtimeapi.PodSandboxNetworkStatus{}
	}
	return st
}

func containerState(s pod.AppState) runtimeapi.ContainerState {
	switch s {
	case pod.AppCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case pod.AppRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case pod.AppExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func criContainer(c *containerEntry) *runtimeapi.Container {
	a := c.app
	return &runtimeapi.Container{
		Id: a.ID, PodSandboxId: a.PodID,
		Metadata:  &runtimeapi.ContainerMetadata{Name: a.Name, Attempt: a.Attempt},
		Image:     &runtimeapi.ImageSpec{Image: c.imageName, UserSpecifiedImage: a.Image},
		ImageRef:  a.ImageRef,
		ImageId:   a.ImageID.String(),
		State:     containerState(a.State),
		CreatedAt: a.CreatedAt.UnixNano(), Labels: copyMap(a.Labels), Annotations: copyMap(a.Annotations),
	}
}

func criContainerStatus(c *containerEntry) *runtimeapi.ContainerStatus {
	a := c.app
	st := &runtimeapi.ContainerStatus{
		Id:        a.ID,
		Metadata:  &runtimeapi.ContainerMetadata{Name: a.Name, Attempt: a.Attempt},
		State:     containerState(a.State),
		CreatedAt: a.CreatedAt.UnixNano(),
		StartedAt: nanos(a.StartedAt),
		Image:     &runtimeapi.ImageSpec{Image: c.imageName, UserSpecifiedImage: a.Image},
		ImageRef:  a.ImageRef,
		ImageId:   a.ImageID.String(),
		Labels:    copyMap(a.Labels), Annotations: copyMap(a.Annotations),
		Mounts:     append(criMounts(a.Mounts), criImageVolumes(a.ImageVolumes)...),
		LogPath:    a.LogPath,
		StopSignal: stopSignal(a.StopSignal),
	}
	switch a.State {
	case pod.AppExited:
		st.FinishedAt = nanos(a.FinishedAt)
		st.ExitCode = int32(a.ExitCode)
		st.Reason, st.Message = a.Reason, a.Message
		if a.OOMKilled {
			st.Reason = "OOMKilled"
		}
		if st.Reason == "" {
			st.Reason = "Completed"
			if a.ExitCode != 0 {
				st.Reason = "Error"
			}
		}
	case pod.AppUnknown:
		st.Reason, st.Message = a.Reason, a.Message
	}
	if c.user != nil {
		st.User = &runtimeapi.ContainerUser{Linux: c.user}
	}
	if c.resources != nil {
		st.Resources = &runtimeapi.ContainerResources{Linux: c.resources}
	}
	return st
}

// specUser is the identity an app's process starts with.
func specUser(s *specs.Spec) *runtimeapi.LinuxContainerUser {
	if s.Process == nil {
		return nil
	}
	u := s.Process.User
	out := &runtimeapi.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID)}
	for _, g := range u.AdditionalGids {
		out.SupplementalGroups = append(out.SupplementalGroups, int64(g))
	}
	return out
}

// specResources maps a bundle's cgroup limits back to the CRI's
// LinuxContainerResources (what ContainerStatus reports and kubelet
// compares after an in-place resize).
func specResources(s *specs.Spec) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if s.Process != nil && s.Process.OOMScoreAdj != nil {
		out.OomScoreAdj = int64(*s.Process.OOMScoreAdj)
	}
	if s.Linux == nil || s.Linux.Resources == nil {
		return out
	}
	r := s.Linux.Resources
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			out.CpuShares = int64(*c.Shares)
		}
		if c.Quota != nil {
			out.CpuQuota = *c.Quota
		}
		if c.Period != nil {
			out.CpuPeriod = int64(*c.Period)
		}
		out.CpusetCpus, out.CpusetMems = c.Cpus, c.Mems
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			out.MemoryLimitInBytes = *m.Limit
		}
		if m.Swap != nil {
			out.MemorySwapLimitInBytes = *m.Swap
		}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.Pagesize, Limit: h.Limit})
	}
	out.Unified = copyMap(r.Unified)
	return out
}

// stopSignal maps an image StopSignal ("SIGQUIT", "QUIT", "3") to the CRI
// enum; unknown and empty names are the runtime default (SIGTERM).
func stopSignal(name string) runtimeapi.Signal {
	if name == "" {
		return runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT
	}
	n := strings.ToUpper(name)
	if num, err := strconv.Atoi(n); err == nil {
		n = unix.SignalName(syscall.Signal(num))
	}
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if v, ok := runtimeapi.Signal_value["SIGNAL_"+n]; ok {
		return runtimeapi.Signal(v)
	}
	return runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT
}

// matchLabels reports whether labels has every key and value of sel.
func matchLabels(labels, sel map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
