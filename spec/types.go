package spec

import (
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Flavor is the stage1 isolation flavor a pod runs with (see DESIGN.md).
type Flavor string

const (
	// FlavorRunc is the default: the pod shares net, ipc and uts (and pid
	// when asked); every app gets its own mount, pid and cgroup namespace,
	// capabilities, seccomp and masked paths, and optionally a user namespace.
	FlavorRunc Flavor = "runc"
	// FlavorFly gives an app nothing but a mount namespace and its rootfs:
	// host network, pid, ipc and uts. It is meant for privileged system pods
	// and debugging.
	FlavorFly Flavor = "fly"
)

// ImageFiles gives read access to files of the image's root filesystem. Generate
// uses it for /etc/passwd and /etc/group, so that users and groups are
// resolved against the image and never against the host. It returns an error
// wrapping fs.ErrNotExist when the file is absent. A nil ImageFiles behaves as
// an image without any files.
type ImageFiles func(path string) ([]byte, error)

// Propagation is the mount propagation of a bind mount, as in CRI's
// MountPropagation.
type Propagation string

const (
	// PropagationPrivate (CRI PROPAGATION_PRIVATE) is the default: no mount
	// events cross between host and container.
	PropagationPrivate Propagation = "rprivate"
	// PropagationHostToContainer (CRI PROPAGATION_HOST_TO_CONTAINER): mounts
	// made on the host below the source appear in the container.
	PropagationHostToContainer Propagation = "rslave"
	// PropagationBidirectional (CRI PROPAGATION_BIDIRECTIONAL): mounts
	// propagate both ways. Kubernetes allows it for privileged apps only.
	PropagationBidirectional Propagation = "rshared"
)

// Mount is a bind mount requested for an app (a CRI Mount).
type Mount struct {
	// HostPath is the absolute path of the source on the host.
	HostPath string
	// ContainerPath is the absolute path of the mount point in the app.
	ContainerPath string
	// Readonly mounts the top-level mount read-only.
	Readonly bool
	// RecursiveReadOnly also makes every submount read-only (the "rro"
	// option). It requires Readonly and private propagation.
	RecursiveReadOnly bool
	// Propagation is the mount propagation; "" means PropagationPrivate.
	// "private", "slave" and "shared" are accepted as aliases of the
	// recursive forms.
	Propagation Propagation
	// SELinuxRelabel is accepted for CRI compatibility and ignored: runclet
	// does not relabel.
	SELinuxRelabel bool
	// UIDMappings, when set together with GIDMappings, makes the mount an
	// id-mapped mount with these mappings (container ID → host ID).
	UIDMappings []specs.LinuxIDMapping
	// GIDMappings is the group counterpart of UIDMappings.
	GIDMappings []specs.LinuxIDMapping
}

// TmpfsMount is a tmpfs of the app's own.
type TmpfsMount struct {
	// ContainerPath is the absolute mount point.
	ContainerPath string
	// Options are tmpfs mount options ("size=64m", "mode=1777", "noexec");
	// nil means nosuid, nodev, mode=1777.
	Options []string
}

// Device is a host device node exposed to an app. The node's type and numbers
// are part of the value, so that Generate never stats the host: use
// DeviceFromHost to fill them in.
type Device struct {
	// HostPath is the device node on the host, e.g. "/dev/fuse".
	HostPath string
	// ContainerPath is where the node is created in the app; "" means
	// HostPath.
	ContainerPath string
	// Permissions is the cgroup access, a combination of "r", "w" and "m";
	// "" means "rwm".
	Permissions string
	// Type is "c" for a character device or "b" for a block device.
	Type string
	// Major is the device's major number.
	Major int64
	// Minor is the device's minor number.
	Minor int64
	// FileMode is the permission bits of the node created in the app.
	FileMode os.FileMode
	// UID owns the node created in the app.
	UID uint32
	// GID is the group of the node created in the app.
	GID uint32
}

// Resources are the app's cgroup limits, in CRI's LinuxContainerResources
// units. Zero values mean "not set".
type Resources struct {
	// CPUShares is the relative CPU weight (cgroup v1 cpu.shares units).
	CPUShares int64
	// CPUQuota is the CFS quota in microseconds per CPUPeriod.
	CPUQuota int64
	// CPUPeriod is the CFS period in microseconds.
	CPUPeriod int64
	// CPUsetCPUs is the cpuset of allowed CPUs, e.g. "0-2,7".
	CPUsetCPUs string
	// CPUsetMems is the cpuset of allowed memory nodes.
	CPUsetMems string
	// MemoryLimit is the memory limit in bytes.
	MemoryLimit int64
	// MemorySwapLimit is the memory+swap limit in bytes. It is only set in
	// the spec when positive; callers that want containerd's "no swap by
	// default" pass MemoryLimit here when the host has a swap controller.
	MemorySwapLimit int64
	// PidsLimit is the maximum number of tasks.
	PidsLimit int64
	// HugepageLimits maps a page size such as "2MB" or "1GB" to a limit in
	// bytes.
	HugepageLimits map[string]uint64
	// OOMScoreAdj is copied to the process; the caller clamps it.
	OOMScoreAdj *int
	// Unified holds raw cgroup v2 files and values, e.g. "memory.high".
	Unified map[string]string
}

// Seccomp profile kinds, as in CRI's SecurityProfile.
const (
	SeccompRuntimeDefault = "RuntimeDefault"
	SeccompUnconfined     = "Unconfined"
	SeccompLocalhost      = "Localhost"
)

// SeccompProfile selects the app's seccomp filter.
type SeccompProfile struct {
	// Kind is SeccompRuntimeDefault (also when empty), SeccompUnconfined or
	// SeccompLocalhost.
	Kind string
	// LocalhostPath is the absolute path of a JSON profile on the host, for
	// Kind SeccompLocalhost.
	LocalhostPath string
}

// App is one app of a pod as requested by the CLI or a CRI CreateContainer.
type App struct {
	// Name is the app's name in the pod, a DNS-1123 label.
	Name string
	// ID uniquely names the app's container: it is the leaf of the app's
	// cgroup, so two attempts of one name never share a cgroup. "" means
	// Name.
	ID string
	// Command overrides the image's ENTRYPOINT (Kubernetes "command").
	Command []string
	// Args overrides the image's CMD (Kubernetes "args").
	Args []string
	// Env holds KEY=VALUE entries; they override the image's by key.
	Env []string
	// WorkingDir overrides the image's working directory.
	WorkingDir string

	// User is the user to run as: "" for the image's USER, or "name", "uid",
	// "name:group", "uid:gid", "uid:group".
	User string
	// RunAsUser (CRI run_as_user) overrides User and the image's USER.
	RunAsUser *int64
	// RunAsGroup (CRI run_as_group) overrides the primary group.
	RunAsGroup *int64
	// RunAsUsername (CRI run_as_username) names a user of the image's
	// /etc/passwd; RunAsUser wins if both are set.
	RunAsUsername string
	// SupplementalGroups are added to the process's groups.
	SupplementalGroups []int64
	// SupplementalGroupsPolicy is "Merge" (default: the image's /etc/group
	// memberships are added) or "Strict" (only the primary group and
	// SupplementalGroups).
	SupplementalGroupsPolicy string

	// Terminal gives the app a pty; TERM=xterm is set unless env sets TERM.
	Terminal bool
	// Stdin keeps stdin open. It does not change the spec: stdio belongs to
	// stage1.
	Stdin bool

	// Mounts are bind mounts, sorted by Generate so parents precede children.
	Mounts []Mount
	// Tmpfs are tmpfs mounts (the CLI's --tmpfs, and /tmp, /var/tmp, /run
	// with --read-only), sorted with Mounts.
	Tmpfs []TmpfsMount
	// Devices are host devices exposed to the app.
	Devices []Device
	// HostDevices are all of the host's devices, exposed when Privileged.
	// The caller lists them (HostDevices) so Generate stays pure.
	HostDevices []Device
	// CapAdd lists capabilities to add ("NET_ADMIN", "CAP_NET_ADMIN" or
	// "ALL").
	CapAdd []string
	// CapDrop lists capabilities to drop, same forms as CapAdd.
	CapDrop []string

	// Privileged gives every capability, every host device, no seccomp, no
	// masked or read-only paths and read-write /sys.
	Privileged bool
	// ReadonlyRootfs makes the rootfs (and the pod's /etc files) read-only.
	ReadonlyRootfs bool
	// NoNewPrivs sets no_new_privs (CRI: !allowPrivilegeEscalation).
	NoNewPrivs bool
	// Seccomp selects the seccomp profile.
	Seccomp SeccompProfile
	// ApparmorProfile is copied to the spec as the profile name; "" means
	// none. The caller maps "runtime/default" to a loaded profile name.
	ApparmorProfile string
	// MaskedPaths: nil means DefaultMaskedPaths; empty but non-nil means none
	// (Kubernetes procMount: Unmasked).
	MaskedPaths []string
	// ReadonlyPaths: nil means DefaultReadonlyPaths; empty but non-nil means
	// none.
	ReadonlyPaths []string

	// Sysctls are app sysctls; they win over the pod's.
	Sysctls map[string]string
	// Rlimits are copied; nothing is set by default (limits are inherited).
	Rlimits []specs.POSIXRlimit
	// Resources are the cgroup limits.
	Resources Resources

	// Annotations are copied to the spec, next to runclet's own.
	Annotations map[string]string

	// RootfsPath is the app's merged rootfs as the runtime sees it and
	// becomes Root.Path; "" means "rootfs" (relative to the bundle).
	RootfsPath string
}

// UserNamespace is a pod's user namespace.
type UserNamespace struct {
	// Path is a pinned user namespace to join; "" creates one with UIDMap
	// and GIDMap.
	Path string
	// UIDMap maps container uids to host uids when creating the namespace.
	UIDMap []specs.LinuxIDMapping
	// GIDMap maps container gids to host gids when creating the namespace.
	GIDMap []specs.LinuxIDMapping
}

// Pod is what an app needs to know about the pod it runs in.
type Pod struct {
	// ID is the pod's unique id; it names cgroups and is annotated.
	ID string
	// Name is the pod's human name.
	Name string
	// Hostname is the pod's hostname; set as the UTS hostname (when the pod
	// has its own UTS namespace) and as $HOSTNAME.
	Hostname string

	// NetNSPath is the pinned network namespace; "" creates a new one
	// (flavor runc).
	NetNSPath string
	// IPCNSPath is the pinned IPC namespace; "" creates a new one.
	IPCNSPath string
	// UTSNSPath is the pinned UTS namespace; "" creates a new one.
	UTSNSPath string
	// PIDNSPath is the pod's pinned PID namespace, joined when SharePID.
	PIDNSPath string
	// SharePID makes all apps share PIDNSPath.
	SharePID bool
	// HostNetwork runs apps in the host's network and UTS namespaces.
	HostNetwork bool
	// HostPID runs apps in the host's PID namespace.
	HostPID bool
	// HostIPC runs apps in the host's IPC namespace.
	HostIPC bool

	// CgroupParent is the pod's cgroup: an absolute path such as
	// "/runclet/<pod>" for cgroupfs, a slice such as "runclet-<pod>.slice"
	// for systemd. "" means "/runclet/<ID>" or "runclet.slice".
	CgroupParent string
	// SystemdCgroup selects runc's systemd cgroup driver path syntax.
	SystemdCgroup bool

	// ResolvConfPath is the pod's resolv.conf, bind-mounted at
	// /etc/resolv.conf when set.
	ResolvConfPath string
	// HostsPath is the pod's hosts file, bind-mounted at /etc/hosts.
	HostsPath string
	// HostnamePath is the pod's hostname file, bind-mounted at /etc/hostname.
	HostnamePath string
	// ShmPath is a pod-shared /dev/shm to bind; "" gives each app a tmpfs,
	// or the host's /dev/shm when the app shares the host's IPC namespace.
	ShmPath string

	// UserNS is the pod's user namespace; nil means none.
	UserNS *UserNamespace
	// Sysctls are pod-level sysctls, applied to every app.
	Sysctls map[string]string
}
