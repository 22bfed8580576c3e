// Package pod is stage0's pod and app model: records on disk (one
// directory per pod, atomic JSON, a flock per pod), the lifecycle that
// prepares a pod's namespaces, network and supervisor, and the per-app
// steps (rootfs, OCI bundle, supervisor calls) the CLI and the CRI share.
package pod

import (
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/internal/state"

	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/spec"
)

// PodState and AppState are where a pod and an app are in their lives:
// the state machine of internal/state, which the supervisor, the CLI and
// the CRI share.
type (
	PodState = state.Pod
	AppState = state.App
)

// Pod and app states (see internal/state).
const (
	PodPreparing = state.PodPreparing
	PodReady     = state.PodReady
	PodStopped   = state.PodStopped
	PodExited    = state.PodExited

	AppCreated = state.AppCreated
	AppRunning = state.AppRunning
	AppExited  = state.AppExited
	AppUnknown = state.AppUnknown
)

// Pod is one pod's record, pod.json in its directory.
type Pod struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	UID         string            `json:"uid,omitempty"`
	Attempt     uint32            `json:"attempt,omitempty"`
	Hostname    string            `json:"hostname"`
	Flavor      string            `json:"flavor"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	CreatedAt   time.Time         `json:"createdAt"`
	State       PodState          `json:"state"`
	// FinishedAt is when the pod stopped or exited (gc's grace counts
	// from it).
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	// ExitWithApps: the pod exits once every app has exited (a pod of
	// `runclet run`); its supervisor runs stage0's exit command then.
	ExitWithApps bool `json:"exitWithApps,omitempty"`

	HostNetwork bool `json:"hostNetwork,omitempty"`
	HostPID     bool `json:"hostPID,omitempty"`
	HostIPC     bool `json:"hostIPC,omitempty"`
	// Asked is what the pod's config asked for, before the flavor had its
	// say (fly gives every pod the host's namespaces): CRI status reports
	// it, since kubelet recreates a sandbox whose modes differ from its
	// pod spec's.
	Asked *NamespaceRequest `json:"asked,omitempty"`
	// HostIPs are the node's addresses, recorded for a fly pod that did
	// not ask for the host network: it is reached there, and kubelet wants
	// an IP for such a pod.
	HostIPs []string `json:"hostIPs,omitempty"`
	// SharePID puts the pod's apps in one pid namespace (pinned at PIDNS,
	// held by a process of the supervisor's).
	SharePID bool `json:"sharePID,omitempty"`

	Ports      []network.PortMapping `json:"ports,omitempty"`
	Attachment *network.Attachment   `json:"attachment,omitempty"`
	DNS        *DNSConfig            `json:"dns,omitempty"`

	// CgroupParent is the pod's cgroup; Owned says runclet made it (and
	// so removes it), as opposed to kubelet's pod cgroup.
	CgroupParent      string            `json:"cgroupParent"`
	CgroupParentOwned bool              `json:"cgroupParentOwned"`
	LogDirectory      string            `json:"logDirectory,omitempty"`
	Sysctls           map[string]string `json:"sysctls,omitempty"`

	// Pinned namespaces ("" = host's, or none for that flavor).
	NetNS string `json:"netns,omitempty"`
	IPCNS string `json:"ipcns,omitempty"`
	UTSNS string `json:"utsns,omitempty"`
	PIDNS string `json:"pidns,omitempty"`
	// UserNS is the pod's pinned user namespace (every app joins it) and
	// IDMap its mappings; "" and nil for the host's.
	UserNS string        `json:"userns,omitempty"`
	IDMap  *UserNSConfig `json:"idMap,omitempty"`

	// Broken, set by PodStatus (never stored), says why a pod that is
	// ready on disk lost its supervisor or pid namespace holder: it can
	// only be stopped and removed.
	Broken string `json:"broken,omitempty"`
}

// OwnedByCRI tells the pods kubelet made through the daemon from the
// CLI's: RunPodSandbox requires a namespace, the CLI never sets one.
// kubelet stops and removes its own pods; the CLI leaves them alone
// unless forced.
func (p *Pod) OwnedByCRI() bool { return p.Namespace != "" }

// Inactive reports a pod that no longer runs: stopped or exited.
func (p *Pod) Inactive() bool { return p.State.Inactive() }

// NamespaceRequest is which host namespaces a pod's config asked for.
type NamespaceRequest struct {
	HostNetwork bool `json:"hostNetwork,omitempty"`
	HostPID     bool `json:"hostPID,omitempty"`
	HostIPC     bool `json:"hostIPC,omitempty"`
}

// DNSConfig is a pod's resolver configuration.
type DNSConfig struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// App is one app's record, apps/<id>/app.json in its pod's directory.
type App struct {
	ID          string            `json:"id"` // also its libcontainer ID
	PodID       string            `json:"podID"`
	Name        string            `json:"name"`
	Attempt     uint32            `json:"attempt,omitempty"`
	Image       string            `json:"image"`   // as requested
	ImageID     digest.Digest     `json:"imageID"` // config digest
	ImageRef    string            `json:"imageRef"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	LogPath     string            `json:"logPath,omitempty"`
	Tty         bool              `json:"tty,omitempty"`
	Stdin       bool              `json:"stdin,omitempty"`
	StdinOnce   bool              `json:"stdinOnce,omitempty"`
	StopSignal  string            `json:"stopSignal,omitempty"`
	Mounts      []spec.Mount      `json:"mounts,omitempty"`
	User        string            `json:"user,omitempty"`
	// Layers are the chain IDs the rootfs stacks: image GC keeps them
	// even if the image is removed while the app exists.
	Layers []digest.Digest `json:"layers"`
	// ImageVolumes are the images mounted into the app (their layers are
	// kept from GC likewise).
	ImageVolumes []ImageVolume `json:"imageVolumes,omitempty"`

	State      AppState  `json:"state"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	ExitCode   int       `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Pid        int       `json:"pid,omitempty"`
}
