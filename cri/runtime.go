// Package cri serves the Kubernetes Container Runtime Interface (CRI v1:
// runtime.v1.RuntimeService and runtime.v1.ImageService) over gRPC, and the
// streaming server (exec, attach, port-forward) whose URLs those services
// return.
//
// The handlers are thin: validate the request (validate.go), call the
// runtime seam (Runtime, implemented over runtime/pod and runtime/image in
// adapter.go), build the response. Errors carry runclet's error classes;
// errors.go maps them to gRPC codes in one interceptor. List and status
// calls are answered from an in-memory index (index.go) that is rebuilt from
// disk at start, updated after every mutation and told about app exits by
// inotify (watch.go). See docs/cri.md.
package cri

import (
	"context"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// Runtime is the seam between the CRI handlers and stage0's runtime: what
// the handlers need from runtime/pod, runtime/image and runtime/network.
// Its pod and app methods are pod.Manager's own (Adapter embeds the
// manager, so they need no forwarding). The handler tests run over the
// real Adapter (a spy on it); the stats tests replace only StatsSource.
//
// Mutating calls get a context detached from the client's (see the
// handlers), so they either finish or undo themselves.
type Runtime interface {
	StatsSource

	// CreatePod prepares a pod; on failure nothing of it is left.
	CreatePod(ctx context.Context, cfg pod.PodConfig) (*pod.Pod, error)
	// StopPod stops a pod's apps, supervisor and network. Idempotent.
	StopPod(ctx context.Context, podID string, timeout time.Duration) error
	// RemovePod removes a pod and everything it was; NotFound when gone.
	RemovePod(ctx context.Context, podID string) error
	// PodStatus reads a pod and its apps from disk.
	PodStatus(ctx context.Context, podID string) (*pod.Pod, []*pod.App, error)
	// ListPods reads every pod record.
	ListPods() ([]*pod.Pod, error)
	// PodPids are the host pids of a pod's supervisor and pid namespace
	// holder, 0 when none is recorded.
	PodPids(podID string) (supervisor, holder int)
	// GCPreparing removes what a crash left half made: pods still
	// "preparing" and, in the other pods, apps whose creation was cut
	// short; it skips pods whose lock is held. Stopped pods are kept:
	// kubelet removes sandboxes itself.
	GCPreparing(ctx context.Context) (pod.GCResult, error)

	// AddApp creates an app (not started) in a ready pod; opts edit its
	// generated spec.
	AddApp(ctx context.Context, podID string, cfg pod.AppConfig, opts ...pod.SpecOpt) (*pod.App, error)
	// StartApp starts a created app.
	StartApp(ctx context.Context, podID, appID string) (*pod.App, error)
	// StopApp stops an app (stop signal, SIGKILL after timeout); a no-op
	// for an exited app.
	StopApp(ctx context.Context, podID, appID string, timeout time.Duration) (*pod.App, error)
	// RemoveApp kills and removes an app.
	RemoveApp(ctx context.Context, podID, appID string) error
	// LoadApp reads one app record with its exit folded in.
	LoadApp(podID, appID string) (*pod.App, error)
	// AppDir is the app's directory, where the supervisor writes exit.json.
	AppDir(podID, appID string) string
	// PodDir is the pod's directory, where its record (pod.json) is.
	PodDir(podID string) string
	// AppSpec reads the app's OCI spec from its bundle (its user and
	// resources are what ContainerStatus shows).
	AppSpec(podID, appID string) (*specs.Spec, error)
	// UpdateApp changes a created or running app's cgroup resources and
	// its bundle to match; limits left at zero stay as they are.
	UpdateApp(ctx context.Context, podID, appID string, r spec.Resources) (*pod.App, error)

	// Exec runs a process in a running app and returns its exit code.
	Exec(ctx context.Context, podID, appID string, cfg pod.ExecConfig, s pod.Streams) (int, error)
	// Attach connects streams to a running app's stdio.
	Attach(ctx context.Context, podID, appID string, s pod.Streams) (int, error)
	// ReopenLog makes the supervisor reopen an app's log file.
	ReopenLog(ctx context.Context, podID, appID string) error
	// PortForward connects stream to port on 127.0.0.1 (else [::1]) in the
	// network namespace at netns ("" = the host's) and copies bytes both
	// ways until either side closes.
	PortForward(ctx context.Context, netns string, port int32, stream io.ReadWriteCloser) error

	// PullImage pulls an image; auth nil means the node's keychain.
	PullImage(ctx context.Context, ref string, auth *authn.AuthConfig) (image.Image, error)
	// GetImage resolves a reference, an image ID or a digest.
	GetImage(refOrID string) (image.Image, error)
	// ListImages lists every stored image.
	ListImages() ([]image.Image, error)
	// RemoveImage removes the image with this ID and all its names.
	RemoveImage(id string) error
	// ImageConfig reads an image's configuration.
	ImageConfig(img image.Image) (*ocispec.Image, error)
	// ImageFsInfo is where images are stored and how much they take.
	ImageFsInfo() (mountpoint string, usage image.Usage, err error)

	// HostDevice describes a host device node for an app.
	HostDevice(hostPath, containerPath, permissions string) (spec.Device, error)
	// HostDevices lists every host device, for privileged apps.
	HostDevices() ([]spec.Device, error)
	// NetworkReady is nil when pods can be attached to the network.
	NetworkReady() error
	// Features says what this host supports.
	Features() Features
}

// StatsSource is where the stats handlers read numbers: the runtime
// itself, unless Options.Stats replaces it (the stats tests give exact
// numbers that a real cgroup cannot).
type StatsSource interface {
	// PodStats reads a pod's cgroup and network statistics; p is the
	// pod's record as the index has it.
	PodStats(ctx context.Context, p *pod.Pod) (*pod.PodStats, error)
	// AppStats reads the cgroup statistics of a pod's apps (appIDs
	// empty: all) from its supervisor; apps it does not have are left out.
	AppStats(ctx context.Context, podID string, appIDs []string) ([]pod.AppStats, error)
	// WritableLayerUsage walks an app's writable layer (callers cache it).
	WritableLayerUsage(podID, appID string) (pod.FsUsage, error)
}

// Features are host capabilities that change what the CRI accepts.
type Features struct {
	// RecursiveReadOnlyMounts: the kernel has mount_setattr (5.12+), so
	// runc can honour "rro".
	RecursiveReadOnlyMounts bool
	// UserNamespaces: overlayfs takes id-mapped lower layers (5.19+), so
	// pods of flavor runc can have a user namespace with an id-mapped
	// rootfs.
	UserNamespaces bool
	// AppArmor: AppArmor is enabled on the host.
	AppArmor bool
	// SwapLimit: the memory cgroup can limit swap, so a memory limit
	// comes with "no swap" unless kubelet asks for swap.
	SwapLimit bool
	// CgroupV2: the node runs the unified cgroup v2 hierarchy, the only
	// one where runc takes linux.resources.unified keys.
	CgroupV2 bool
	// Hugetlb: the hugetlb cgroup controller is there for runc to use (a
	// cgroup v1 hierarchy, or cgroup v2's controllers). Without it,
	// hugepage limits are dropped, as containerd's
	// disable_hugetlb_controller does: kubelet sends them (zero for pods
	// without hugepages) and runc would refuse every container.
	Hugetlb bool
}
