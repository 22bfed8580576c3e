package cri

import (
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/spec"
)

// Request validation: everything here runs before anything is touched, and
// every failure is InvalidArgument.

var (
	hexID = regexp.MustCompile(`^[a-f0-9]{6,64}$`)
)

func invalid(format string, a ...any) error { return errdefs.InvalidArgument(format, a...) }

// validateID checks an ID (or ID prefix) given by the client.
func validateID(what, id string) error {
	if id == "" {
		return invalid("%s is required", what)
	}
	if len(id) > 128 || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return invalid("%s %.140q is not a valid ID", what, id)
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// validateSandboxConfig checks a RunPodSandbox request's config.
func validateSandboxConfig(c *runtimeapi.PodSandboxConfig) error {
	if c == nil {
		return invalid("sandbox config is required")
	}
	md := c.GetMetadata()
	if md == nil {
		return invalid("sandbox config must include metadata (name, namespace, uid)")
	}
	if md.Name == "" || md.Namespace == "" || md.Uid == "" {
		return invalid("sandbox metadata needs name, namespace and uid (got %q, %q, %q)", md.Name, md.Namespace, md.Uid)
	}
	if err := spec.CheckName("sandbox name", md.Name); err != nil {
		return err
	}
	if err := spec.CheckName("sandbox namespace", md.Namespace); err != nil {
		return err
	}
	// The uid, name and namespace reach CNI plugins in CNI_ARGS, which is
	// "K=V;K=V": a ';' or '=' would add arguments of the client's choosing
	// (IP=, the pod's address). Name and namespace are DNS-like already.
	if len(md.Uid) > 128 || hasControl(md.Uid) || strings.ContainsAny(md.Uid, "/;=") {
		return invalid("sandbox uid %.140q is not valid (no '/', ';', '=' or control characters, at most 128 bytes)", md.Uid)
	}
	if c.Hostname != "" && (len(c.Hostname) > 64 || hasControl(c.Hostname) || strings.ContainsAny(c.Hostname, " /")) {
		return invalid("hostname %.70q is not valid", c.Hostname)
	}
	if c.LogDirectory != "" && (!filepath.IsAbs(c.LogDirectory) || hasControl(c.LogDirectory)) {
		return invalid("log directory %q must be an absolute path", c.LogDirectory)
	}
	for _, pm := range c.PortMappings {
		if pm == nil {
			return invalid("port mapping must not be null")
		}
		if pm.HostPort < 0 || pm.HostPort > 65535 || pm.ContainerPort < 0 || pm.ContainerPort > 65535 {
			return invalid("port mapping %d:%d: ports must be in 0-65535", pm.HostPort, pm.ContainerPort)
		}
		if pm.HostPort > 0 && pm.ContainerPort == 0 {
			return invalid("port mapping of host port %d needs a container port", pm.HostPort)
		}
		if _, ok := runtimeapi.Protocol_name[int32(pm.Protocol)]; !ok {
			return invalid("port mapping %d:%d: unknown protocol %d", pm.HostPort, pm.ContainerPort, pm.Protocol)
		}
		if pm.HostIp != "" {
			if _, err := netip.ParseAddr(pm.HostIp); err != nil {
				return invalid("port mapping host IP %q: %v", pm.HostIp, err)
			}
		}
	}
	if dns := c.GetDnsConfig(); dns != nil {
		for _, s := range dns.Servers {
			if _, err := netip.ParseAddr(s); err != nil {
				return invalid("DNS server %q is not an IP address", s)
			}
		}
		for _, s := range append(append([]string(nil), dns.Searches...), dns.Options...) {
			if s == "" || hasControl(s) || strings.ContainsAny(s, " \t") {
				return invalid("DNS search or option %q is not valid", s)
			}
		}
	}
	if err := validateNamespaceModes(c.GetLinux().GetSecurityContext().GetNamespaceOptions()); err != nil {
		return err
	}
	if cg := c.GetLinux().GetCgroupParent(); cg != "" && (hasControl(cg) || strings.Contains(cg, "..")) {
		return invalid("cgroup parent %q is not valid", cg)
	}
	return nil
}

func validateNamespaceModes(ns *runtimeapi.NamespaceOption) error {
	if ns == nil {
		return nil
	}
	for what, m := range map[string]runtimeapi.NamespaceMode{"network": ns.Network, "pid": ns.Pid, "ipc": ns.Ipc} {
		if _, ok := runtimeapi.NamespaceMode_name[int32(m)]; !ok {
			return invalid("%s namespace mode %d is unknown", what, m)
		}
	}
	if u := ns.GetUsernsOptions(); u != nil {
		if _, ok := runtimeapi.NamespaceMode_name[int32(u.Mode)]; !ok {
			return invalid("user namespace mode %d is unknown", u.Mode)
		}
	}
	return nil
}

// validateImageName checks that s names an image: a reference, an image
// ID or digest, or a hex ID prefix.
func validateImageName(s string) error {
	if s == "" {
		return invalid("image is required")
	}
	if _, err := digest.Parse(s); err == nil {
		return nil
	}
	if hexID.MatchString(s) {
		return nil
	}
	if _, err := image.ParseReference(s); err != nil {
		return invalid("image %.200q is not a valid reference: %v", s, err)
	}
	return nil
}

// validateLogPath checks a container's log path against its sandbox's log
// directory and returns the joined path ("" when the container has none).
func validateLogPath(logDir, logPath string) (string, error) {
	if logPath == "" {
		return "", nil
	}
	if logDir == "" {
		return "", invalid("container log path %q needs the sandbox's log directory, which is not set", logPath)
	}
	if filepath.IsAbs(logPath) || hasControl(logPath) {
		return "", invalid("container log path %q must be relative to the sandbox log directory", logPath)
	}
	full := filepath.Join(logDir, logPath)
	rel, err := filepath.Rel(filepath.Clean(logDir), full)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", invalid("container log path %q leaves the sandbox log directory %s", logPath, logDir)
	}
	return full, nil
}

// validateContainerConfig checks a CreateContainer request's config;
// logDir is the sandbox's log directory.
func validateContainerConfig(c *runtimeapi.ContainerConfig, logDir string) error {
	if c == nil {
		return invalid("container config is required")
	}
	md := c.GetMetadata()
	if md == nil || md.Name == "" {
		return invalid("container config must include metadata with a name")
	}
	if err := spec.CheckName("container name", md.Name); err != nil {
		return err
	}
	if c.GetImage() == nil {
		return invalid("container config must include an image")
	}
	if err := validateImageName(c.GetImage().GetImage()); err != nil {
		return err
	}
	if _, err := validateLogPath(logDir, c.LogPath); err != nil {
		return err
	}
	if c.WorkingDir != "" && !filepath.IsAbs(c.WorkingDir) {
		return invalid("working directory %q must be absolute", c.WorkingDir)
	}
	for _, kv := range c.Envs {
		if kv == nil || kv.Key == "" || strings.ContainsAny(kv.Key, "=\x00") {
			return invalid("environment variable name %q is not valid", kv.GetKey())
		}
	}
	for _, m := range c.Mounts {
		if err := validateMount(m); err != nil {
			return err
		}
	}
	for _, d := range c.Devices {
		if d == nil || !filepath.IsAbs(d.HostPath) || (d.ContainerPath != "" && !filepath.IsAbs(d.ContainerPath)) {
			return invalid("device %q -> %q: paths must be absolute", d.GetHostPath(), d.GetContainerPath())
		}
		if strings.Trim(d.Permissions, "rwm") != "" {
			return invalid("device %s: permissions %q: want a combination of r, w and m", d.HostPath, d.Permissions)
		}
	}
	if _, ok := runtimeapi.Signal_name[int32(c.StopSignal)]; !ok {
		return invalid("stop signal %d is unknown", c.StopSignal)
	}
	sc := c.GetLinux().GetSecurityContext()
	if sc == nil {
		return nil
	}
	if sc.RunAsGroup != nil && sc.RunAsUser == nil && sc.RunAsUsername == "" {
		return invalid("run_as_group needs run_as_user or run_as_username")
	}
	if sc.RunAsUser != nil && sc.RunAsUsername != "" {
		return invalid("run_as_user and run_as_username are mutually exclusive")
	}
	if sc.RunAsUser != nil && (sc.RunAsUser.Value < 0 || sc.RunAsUser.Value > 1<<32-2) {
		return invalid("run_as_user %d is out of range", sc.RunAsUser.Value)
	}
	if sc.RunAsGroup != nil && (sc.RunAsGroup.Value < 0 || sc.RunAsGroup.Value > 1<<32-2) {
		return invalid("run_as_group %d is out of range", sc.RunAsGroup.Value)
	}
	if _, ok := runtimeapi.SupplementalGroupsPolicy_name[int32(sc.SupplementalGroupsPolicy)]; !ok {
		return invalid("supplemental groups policy %d is unknown", sc.SupplementalGroupsPolicy)
	}
	for _, p := range append(append([]string(nil), sc.MaskedPaths...), sc.ReadonlyPaths...) {
		if !filepath.IsAbs(p) {
			return invalid("masked or read-only path %q must be absolute", p)
		}
	}
	for _, p := range []*runtimeapi.SecurityProfile{sc.Seccomp, sc.Apparmor} {
		if p == nil {
			continue
		}
		if _, ok := runtimeapi.SecurityProfile_ProfileType_name[int32(p.ProfileType)]; !ok {
			return invalid("security profile type %d is unknown", p.ProfileType)
		}
		if p.ProfileType == runtimeapi.SecurityProfile_Localhost && p.LocalhostRef == "" {
			return invalid("a Localhost security profile needs localhost_ref")
		}
	}
	if p := sc.Seccomp; p != nil && p.ProfileType == runtimeapi.SecurityProfile_Localhost && !filepath.IsAbs(p.LocalhostRef) {
		return invalid("seccomp profile %q must be an absolute path", p.LocalhostRef)
	}
	return validateNamespaceModes(sc.NamespaceOptions)
}

func validateMount(m *runtimeapi.Mount) error {
	if m == nil {
		return invalid("mount must not be null")
	}
	if !filepath.IsAbs(m.ContainerPath) || filepath.Clean(m.ContainerPath) == "/" {
		return invalid("mount container path %q must be absolute and not /", m.ContainerPath)
	}
	if m.Image == nil && !filepath.IsAbs(m.HostPath) {
		return invalid("mount %s: host path %q must be absolute", m.ContainerPath, m.HostPath)
	}
	if m.Image != nil && m.HostPath != "" {
		return invalid("mount %s: host_path and image are mutually exclusive", m.ContainerPath)
	}
	if _, ok := runtimeapi.MountPropagation_name[int32(m.Propagation)]; !ok {
		return invalid("mount %s: unknown propagation %d", m.ContainerPath, m.Propagation)
	}
	if m.RecursiveReadOnly && (!m.Readonly || m.Propagation != runtimeapi.MountPropagation_PROPAGATION_PRIVATE) {
		return invalid("mount %s: recursive_read_only needs readonly and private propagation", m.ContainerPath)
	}
	if (len(m.UidMappings) == 0) != (len(m.GidMappings) == 0) {
		return invalid("mount %s: uid and gid mappings go together", m.ContainerPath)
	}
	return nil
}

// validateStateFilter checks an enum value of a list filter.
func validContainerState(s runtimeapi.ContainerState) bool {
	_, ok := runtimeapi.ContainerState_name[int32(s)]
	return ok
}
