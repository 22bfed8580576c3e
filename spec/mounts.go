package spec

import (
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// Mount points that Generate fills by default.
const (
	devShm         = "/dev/shm"
	etcHosts       = "/etc/hosts"
	etcResolvConf  = "/etc/resolv.conf"
	etcHostname    = "/etc/hostname"
	sysfsDir       = "/sys"
	cgroupfsDir    = "/sys/fs/cgroup"
	defaultShmSize = "size=65536k" // 64 MiB, Docker's and containerd's default
)

// DefaultMaskedPaths returns the paths hidden from unprivileged apps
// (containerd's list): kernel interfaces that leak host information or
// allow attacks from inside a container.
func DefaultMaskedPaths() []string {
	return []string{
		"/proc/acpi",
		"/proc/asound",
		"/proc/kcore",
		"/proc/keys",
		"/proc/latency_stats",
		"/proc/timer_list",
		"/proc/timer_stats",
		"/proc/sched_debug",
		"/proc/scsi",
		"/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
}

// DefaultReadonlyPaths returns the paths made read-only for unprivileged
// apps (containerd's list): writes there would change the host kernel.
func DefaultReadonlyPaths() []string {
	return []string{
		"/proc/bus",
		"/proc/fs",
		"/proc/irq",
		"/proc/sys",
		"/proc/sysrq-trigger",
	}
}

// defaultMounts are the kernel filesystems every app gets, as containerd's
// CRI plugin sets them up. Privileged apps get /sys and /sys/fs/cgroup
// read-write, everyone else read-only. /dev/shm is the pod's ShmPath when
// it has one, else the host's /dev/shm for an app in the host's IPC
// namespace (as containerd and Docker do: POSIX shared memory lives there,
// so an app on the host's IPC must see the host's), else a tmpfs of its own.
func defaultMounts(app App, pod Pod, iso isolation) []specs.Mount {
	sysMode := "ro"
	if app.Privileged {
		sysMode = "rw"
	}
	shm := specs.Mount{
		Destination: devShm, Type: "tmpfs", Source: "shm",
		Options: []string{"nosuid", "noexec", "nodev", "mode=1777", defaultShmSize},
	}
	shmPath := pod.ShmPath
	if shmPath == "" && iso.hostIPC {
		shmPath = devShm
	}
	if shmPath != "" {
		shm = specs.Mount{
			Destination: devShm, Type: "bind", Source: shmPath,
			Options: []string{"rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"},
		}
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		shm,
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: sysfsDir, Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysMode}},
		{Destination: cgroupfsDir, Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", sysMode}},
	}
}

// cleanContainerPath checks that p is an absolute path and cleans it.
func cleanContainerPath(what, p string) (string, error) {
	if !path.IsAbs(p) {
		return "", errdefs.InvalidArgument("%s %q is not an absolute path", what, p)
	}
	if strings.ContainsRune(p, 0) {
		return "", errdefs.InvalidArgument("%s %q contains a NUL byte", what, p)
	}
	return path.Clean(p), nil
}

// normalizePropagation maps "" to PropagationPrivate. The non-recursive
// names are accepted as aliases: every bind here is an rbind, and mixing a
// recursive bind with non-recursive propagation would leave submounts
// behind.
func normalizePropagation(p Propagation) (Propagation, error) {
	switch p {
	case "", "private", PropagationPrivate:
		return PropagationPrivate, nil
	case "slave", PropagationHostToContainer:
		return PropagationHostToContainer, nil
	case "shared", PropagationBidirectional:
		return PropagationBidirectional, nil
	}
	return "", fmt.Errorf("unknown propagation %q", p)
}

// bindOptions are the options of a bind mount as containerd writes them:
// recursive bind, propagation, then the access mode.
func bindOptions(prop Propagation, readonly bool) []string {
	mode := "rw"
	if readonly {
		mode = "ro"
	}
	return []string{"rbind", string(prop), mode}
}

// userMount converts and checks one requested mount and returns its
// propagation too.
func userMount(m Mount) (specs.Mount, Propagation, error) {
	dst, err := cleanContainerPath("mount container path", m.ContainerPath)
	if err != nil {
		return specs.Mount{}, "", err
	}
	if dst == "/" {
		return specs.Mount{}, "", errdefs.InvalidArgument("mount of %q over the app's root is not allowed", m.HostPath)
	}
	src, err := cleanContainerPath("mount host path", m.HostPath)
	if err != nil {
		return specs.Mount{}, "", err
	}
	prop, err := normalizePropagation(m.Propagation)
	if err != nil {
		return specs.Mount{}, "", errdefs.InvalidArgument("mount %s: %w", dst, err)
	}
	opts := bindOptions(prop, m.Readonly)
	if m.RecursiveReadOnly {
		// Same rule as kubelet: a recursive read-only mount that could
		// receive new submounts from the host would not stay read-only.
		if !m.Readonly || prop != PropagationPrivate {
			return specs.Mount{}, "", errdefs.InvalidArgument("mount %s: recursive read-only needs readonly and private propagation", dst)
		}
		opts = append(opts, "rro")
	}
	idmapped := m.UIDMappings != nil || m.GIDMappings != nil
	if idmapped && (len(m.UIDMappings) == 0 || len(m.GIDMappings) == 0) {
		// runc refuses id-mapped mounts with only one of the two.
		return specs.Mount{}, "", errdefs.InvalidArgument("mount %s: id-mapped mounts need both uid and gid mappings", dst)
	}
	return specs.Mount{
		Destination: dst,
		Type:        "bind",
		Source:      src,
		Options:     opts,
		UIDMappings: slices.Clone(m.UIDMappings),
		GIDMappings: slices.Clone(m.GIDMappings),
	}, prop, nil
}

// podFileMounts bind-mounts the pod's /etc/hosts, /etc/resolv.conf and
// /etc/hostname unless the app mounts something there itself. Like
// containerd they follow the rootfs: read-only when it is.
func podFileMounts(app App, pod Pod, taken map[string]bool) []specs.Mount {
	var out []specs.Mount
	for _, f := range []struct{ src, dst string }{
		{pod.HostsPath, etcHosts},
		{pod.ResolvConfPath, etcResolvConf},
		{pod.HostnamePath, etcHostname},
	} {
		if f.src == "" || taken[f.dst] {
			continue
		}
		out = append(out, specs.Mount{
			Destination: f.dst, Type: "bind", Source: f.src,
			Options: bindOptions(PropagationPrivate, app.ReadonlyRootfs),
		})
	}
	return out
}

// mountDepth counts the components of a clean absolute path.
func mountDepth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// buildMounts returns the spec's mounts and the rootfs propagation the
// requested mounts need. Defaults come first, minus those the app replaces;
// then the pod's files and the app's mounts, stably sorted by depth so a
// parent is always mounted before its children.
func buildMounts(app App, pod Pod, iso isolation) ([]specs.Mount, string, error) {
	taken := map[string]bool{}
	var extra []specs.Mount
	rootProp := ""
	for _, m := range app.Mounts {
		sm, prop, err := userMount(m)
		if err != nil {
			return nil, "", err
		}
		if taken[sm.Destination] {
			return nil, "", errdefs.InvalidArgument("mount container path %q is used twice", sm.Destination)
		}
		taken[sm.Destination] = true
		extra = append(extra, sm)
		rootProp = strongerPropagation(rootProp, prop)
	}
	for _, tm := range app.Tmpfs {
		dst, err := cleanContainerPath("tmpfs path", tm.ContainerPath)
		if err != nil {
			return nil, "", err
		}
		if dst == "/" {
			return nil, "", errdefs.InvalidArgument("tmpfs over the app's root is not allowed")
		}
		if taken[dst] {
			return nil, "", errdefs.InvalidArgument("mount container path %q is used twice", dst)
		}
		taken[dst] = true
		opts := slices.Clone(tm.Options)
		if opts == nil {
			opts = []string{"nosuid", "nodev", "mode=1777"}
		}
		extra = append(extra, specs.Mount{Destination: dst, Type: "tmpfs", Source: "tmpfs", Options: opts})
	}
	extra = append(extra, podFileMounts(app, pod, taken)...)
	slices.SortStableFunc(extra, func(a, b specs.Mount) int {
		return mountDepth(a.Destination) - mountDepth(b.Destination)
	})
	var out []specs.Mount
	for _, m := range defaultMounts(app, pod, iso) {
		if !taken[m.Destination] {
			out = append(out, m)
		}
	}
	return append(out, extra...), rootProp, nil
}

// strongerPropagation returns the rootfs propagation needed so that a mount
// with propagation p works: a shared mount needs a shared rootfs and a slave
// mount at least a slave one (the mount's peer group must be reachable).
func strongerPropagation(cur string, p Propagation) string {
	switch {
	case p == PropagationBidirectional:
		return string(PropagationBidirectional)
	case p == PropagationHostToContainer && cur == "":
		return string(PropagationHostToContainer)
	}
	return cur
}

// maskedAndReadonly returns the masked and read-only paths: none for
// privileged apps, the defaults when the app says nothing (nil), and exactly
// the app's lists otherwise (an empty list unmasks everything).
func maskedAndReadonly(app App) (masked, readonly []string, err error) {
	if app.Privileged {
		return nil, nil, nil
	}
	masked, readonly = DefaultMaskedPaths(), DefaultReadonlyPaths()
	if app.MaskedPaths != nil {
		if masked, err = cleanPaths("masked path", app.MaskedPaths); err != nil {
			return nil, nil, err
		}
	}
	if app.ReadonlyPaths != nil {
		if readonly, err = cleanPaths("read-only path", app.ReadonlyPaths); err != nil {
			return nil, nil, err
		}
	}
	return masked, readonly, nil
}

func cleanPaths(what string, paths []string) ([]string, error) {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		c, err := cleanContainerPath(what, p)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
