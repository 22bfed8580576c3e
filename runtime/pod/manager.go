package pod

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/internal/state"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// Flavors.
const (
	FlavorRunc = "runc"
	FlavorFly  = "fly"
)

// Options configure a Manager.
type Options struct {
	Layout
	Images        *image.Store
	Network       *network.Manager
	Stage1Path    string
	DefaultFlavor string
	SystemdCgroup bool
	MaxLogLine    int
	// ExitCommand is stage0's command (program and arguments; the pod's ID
	// is appended) that the supervisor of an ExitWithApps pod runs once
	// every app has exited. Empty: such pods stay ready.
	ExitCommand []string
}

// Manager runs pods. Every method takes the pod's lock for its changes,
// so the CLI and a daemon can share one data root.
type Manager struct {
	opts   Options
	l      Layout
	hellos sync.Map // pod ID → proto.HelloResult of its supervisor
}

// New returns a Manager and hooks pod layer use into image GC.
func New(opts Options) (*Manager, error) {
	if opts.DefaultFlavor == "" {
		opts.DefaultFlavor = FlavorRunc
	}
	if opts.MaxLogLine <= 0 {
		opts.MaxLogLine = 16 << 10
	}
	m := &Manager{opts: opts, l: opts.Layout}
	// Private to root all the way down (perm.go); an older store is tightened.
	if err := m.tightenStore(); err != nil {
		return nil, err
	}
	if opts.Images != nil {
		opts.Images.InUse = m.l.ImageUses
	}
	return m, nil
}

// Layout is where the manager keeps pods.
func (m *Manager) Layout() Layout { return m.l }

// PodConfig is a pod request, from the CLI or CRI RunPodSandbox.
type PodConfig struct {
	Name, Namespace, UID string
	Attempt              uint32
	Hostname             string
	Flavor               string
	Labels, Annotations  map[string]string
	HostNetwork          bool
	HostPID, HostIPC     bool
	// SharePID gives the pod's apps one pid namespace (CRI pid POD).
	SharePID bool
	Ports    []network.PortMapping
	DNS      *DNSConfig
	// CgroupParent is the pod's cgroup (kubelet's pod cgroup); "" makes
	// one of runclet's own, /runclet/<pod id>.
	CgroupParent string
	LogDirectory string
	Sysctls      map[string]string
	// UserNS gives the pod a user namespace of its own (nil: the host's).
	UserNS *UserNSConfig
	// ExitWithApps makes the pod exit once every app has exited (rkt's
	// `run`): supervisor gone, network released, state exited.
	ExitWithApps bool
}

var (
	appIDRE      = regexp.MustCompile(`^[0-9a-f]{32}$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// checkHostname wants a DNS subdomain of at most 64 bytes (the kernel's
// limit): kubelet passes a pod's name, which may have dots, as its
// hostname, and a host-network pod keeps the node's, maybe an FQDN.
func checkHostname(h string) error {
	if len(h) > 64 || !dnsSubdomain.MatchString(strings.ToLower(h)) {
		return errdefs.InvalidArgument("hostname %q is not a valid DNS name of at most 64 bytes", h)
	}
	return nil
}

// undo collects rollback steps; a failed operation runs them in reverse.
type undo []func() error

func (u *undo) add(f func() error) { *u = append(*u, f) }
func (u *undo) run(what string) {
	for i := len(*u) - 1; i >= 0; i-- {
		if err := (*u)[i](); err != nil {
			slog.Warn("rollback step failed", "of", what, "err", err)
		}
	}
}

// CreatePod prepares a pod: its directories, pinned namespaces, network,
// per-pod /etc files and supervisor. On failure everything done is undone.
func (m *Manager) CreatePod(ctx context.Context, cfg PodConfig) (_ *Pod, retErr error) {
	p := &Pod{
		ID: newID(), Name: cfg.Name, Namespace: cfg.Namespace, UID: cfg.UID, Attempt: cfg.Attempt,
		Hostname: cfg.Hostname, Flavor: cfg.Flavor, Labels: cfg.Labels, Annotations: cfg.Annotations,
		CreatedAt: time.Now().UTC(), State: PodPreparing, HostNetwork: cfg.HostNetwork, HostPID: cfg.HostPID,
		HostIPC: cfg.HostIPC, SharePID: cfg.SharePID && !cfg.HostPID, Ports: cfg.Ports, DNS: cfg.DNS, CgroupParent: cfg.CgroupParent,
		LogDirectory: cfg.LogDirectory, Sysctls: cfg.Sysctls, ExitWithApps: cfg.ExitWithApps,
	}
	if p.Flavor == "" {
		p.Flavor = m.opts.DefaultFlavor
	}
	switch p.Flavor {
	case FlavorRunc:
	case FlavorFly:
		p.Asked = &NamespaceRequest{HostNetwork: p.HostNetwork, HostPID: p.HostPID, HostIPC: p.HostIPC}
		if !p.HostNetwork {
			p.HostIPs = network.HostIPs()
		}
		p.HostNetwork, p.HostPID, p.HostIPC = true, true, true
	default:
		return nil, errdefs.InvalidArgument("unknown stage1 flavor %q (want runc or fly)", p.Flavor)
	}
	if p.Name == "" {
		p.Name = "runclet-" + p.ID[:8]
	}
	if err := spec.CheckName("pod name", p.Name); err != nil {
		return nil, err
	}
	switch {
	case p.Hostname != "":
		if err := checkHostname(p.Hostname); err != nil {
			return nil, err
		}
	case checkHostname(p.Name) == nil:
		p.Hostname = p.Name
	default:
		// The node's, as containerd and CRI-O do for a pod that names
		// none (and whose name would not make a hostname).
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("pod %s: no hostname given and the node's: %w", p.Name, err)
		}
		p.Hostname = h
	}
	if p.CgroupParent == "" {
		p.CgroupParent, p.CgroupParentOwned = "/runclet/"+p.ID, true
		if m.opts.SystemdCgroup {
			p.CgroupParent = "runclet-" + p.ID + ".slice"
		}
	}
	if err := checkUserNS(cfg.UserNS, p); err != nil {
		return nil, err
	}
	p.IDMap = cfg.UserNS
	if p.HostNetwork && len(p.Ports) > 0 {
		p.Ports = nil // host network needs no mapping
	}
	if err := m.checkPorts(p.Ports); err != nil {
		return nil, err
	}

	// The pod appears under its ID already locked and recorded (state
	// preparing), and its name taken: see placePod.
	lock, err := m.placePod(p)
	if err != nil {
		return nil, err
	}
	var u undo
	defer func() {
		if retErr != nil {
			u.run("create pod " + p.ID) // under the pod's lock, so gc waits
		}
		lock.Unlock()
	}()
	u.add(func() error { return os.RemoveAll(m.l.RunDir(p.ID)) })
	u.add(func() error { return os.RemoveAll(m.l.PodDir(p.ID)) })
	if err := m.makePodDirs(p); err != nil {
		return nil, err
	}
	pauseAt(PauseAfterPodDir)
	if p.IDMap != nil { // the pod's root may now search the data root
		u.add(func() error { os.Remove(m.l.podFile(p.ID)); return m.syncTraverse() })
		if err := m.syncTraverse(); err != nil {
			return nil, err
		}
	}

	if p.IDMap != nil {
		if err := m.pinUserNamespaces(p, p.IDMap); err != nil {
			return nil, err
		}
		u.add(func() error {
			return errors.Join(m.endPidnsHolder(p), network.RemoveNetNS(p.NetNS), unpinNS(p.UTSNS), unpinNS(p.IPCNS), unpinNS(p.UserNS))
		})
	}
	if !p.HostNetwork && p.IDMap == nil {
		p.NetNS = filepath.Join(m.l.RunDir(p.ID), "ns", "net")
		if err := network.NewNetNS(p.NetNS); err != nil {
			return nil, fmt.Errorf("pod network namespace: %w", err)
		}
		u.add(func() error { return network.RemoveNetNS(p.NetNS) })
	}
	if p.Flavor == FlavorRunc && p.IDMap == nil {
		if !p.HostNetwork {
			p.UTSNS = filepath.Join(m.l.RunDir(p.ID), "ns", "uts")
		}
		if !p.HostIPC {
			p.IPCNS = filepath.Join(m.l.RunDir(p.ID), "ns", "ipc")
		}
		if p.SharePID {
			p.PIDNS = filepath.Join(m.l.RunDir(p.ID), "ns", "pid") // the supervisor pins it
		}
		if p.UTSNS != "" || p.IPCNS != "" {
			if err := m.pinNamespaces(p); err != nil {
				return nil, err
			}
			u.add(func() error { return errors.Join(unpinNS(p.UTSNS), unpinNS(p.IPCNS)) })
		}
	}
	if err := m.savePod(p); err != nil {
		return nil, err
	}
	if p.NetNS != "" {
		if m.opts.Network == nil {
			return nil, errdefs.FailedPrecondition("pod %s needs a network but networking is not configured", p.ID)
		}
		var opts []network.SetupOption
		if p.Namespace != "" {
			opts = append(opts, network.WithKubernetesPod(p.Namespace, p.Name, p.UID))
		}
		att, err := m.opts.Network.Setup(ctx, p.ID, p.NetNS, p.Ports, opts...)
		if err != nil {
			return nil, err
		}
		failAt(FailAfterNetworkSetup)
		p.Attachment = att
		u.add(func() error { return m.opts.Network.Teardown(context.Background(), p.ID, p.NetNS, p.Ports) })
		if err := m.savePod(p); err != nil {
			return nil, err
		}
	}
	if err := m.writeEtc(p); err != nil {
		return nil, err
	}
	// A supervisor killed while it starts leaves the pid namespace holder it started and pinned.
	// It may have moved a holder into the pod's cgroup already.
	u.add(func() error { return errors.Join(m.endPidnsHolder(p), m.removePodCgroups(p)) })
	if err := m.startSupervisor(ctx, p); err != nil {
		return nil, err
	}
	u.add(func() error { return m.call(context.Background(), p.ID, proto.MethodShutdown, nil, nil) })
	p.State = PodReady
	if err := m.savePod(p); err != nil {
		return nil, err
	}
	return p, nil
}

func (m *Manager) savePod(p *Pod) error { return m.l.savePod(p) }

// placePod puts a new pod's directory in place: made under a staging
// name, its lock taken and its first record written there, then renamed
// to the pod's ID. So no other process (gc, a daemon's crash cleanup)
// ever sees a pod directory that is unlocked and unrecorded while it is
// being made. The name check and the rename happen under the data root's
// names lock, so two processes cannot both take one name; a crashed
// creator's staging directory is removed by gc under that lock. The
// caller gets the pod's lock, held.
func (m *Manager) placePod(p *Pod) (_ *fsutil.Lock, retErr error) {
	names, err := fsutil.LockFile(m.l.namesLockFile(), false)
	if err != nil {
		return nil, err
	}
	defer names.Unlock()
	pods, err := m.l.ListPods()
	if err != nil {
		return nil, err
	}
	for _, o := range pods {
		if o.Namespace == p.Namespace && o.Name == p.Name && o.UID == p.UID && o.Attempt == p.Attempt {
			if p.Namespace != "" {
				return nil, errdefs.AlreadyExists("pod sandbox %s/%s (uid %s, attempt %d) already exists as %s", p.Namespace, p.Name, p.UID, p.Attempt, o.ID)
			}
			return nil, errdefs.AlreadyExists("pod name %q is taken by pod %s (%s); remove it or pick another --name", p.Name, o.ID, o.State)
		}
	}
	stage := m.l.stagingDir(p.ID)
	if err := os.Mkdir(stage, 0o700); err != nil { // makePodDirs sets its mode and group
		return nil, fmt.Errorf("pod %s: %w", p.ID, err)
	}
	lock, err := fsutil.LockFile(filepath.Join(stage, "lock"), false)
	if err != nil {
		os.RemoveAll(stage)
		return nil, err
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(stage)
			lock.Unlock()
		}
	}()
	if err := writeJSON(filepath.Join(stage, "pod.json"), p); err != nil {
		return nil, err
	}
	if err := os.Rename(stage, m.l.PodDir(p.ID)); err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.ID, err)
	}
	return lock, nil
}

func (m *Manager) pinNamespaces(p *Pod) error {
	uts := p.UTSNS
	if uts == "" {
		// pinUTSIPC always makes a UTS namespace; with host networking
		// the pod keeps the host's, so pin only IPC.
		uts = filepath.Join(m.l.RunDir(p.ID), "ns", "uts-unused")
		defer unpinNS(uts)
	}
	return pinUTSIPC(uts, p.IPCNS, p.Hostname)
}

func (m *Manager) writeEtc(p *Pod) error {
	etc := m.l.EtcDir(p.ID)
	dns := p.DNS
	if dns == nil {
		dns = &DNSConfig{}
	}
	if err := network.WriteResolvConf(filepath.Join(etc, "resolv.conf"), dns.Servers, dns.Searches, dns.Options, p.HostNetwork); err != nil {
		return err
	}
	var ips []string
	if p.Attachment != nil {
		ips = p.Attachment.PodIPs()
	}
	if err := network.WriteHosts(filepath.Join(etc, "hosts"), p.Hostname, ips, p.HostNetwork); err != nil {
		return err
	}
	hostname := p.Hostname
	if p.HostNetwork {
		hostname, _ = os.Hostname()
	}
	return network.WriteHostname(filepath.Join(etc, "hostname"), hostname)
}

// AppConfig is an app request, from the CLI or CRI CreateContainer.
type AppConfig struct {
	// ID presets the app's id (32 lower-case hex digits, unique on the
	// node); "" picks one.
	ID                  string
	Name                string
	Attempt             uint32
	Image               string
	Labels, Annotations map[string]string
	// LogPath is the CRI log file; "" means app.log in the app's directory.
	LogPath string
	// StopSignal overrides the image's StopSignal ("SIGQUIT", "3", ...).
	StopSignal string
	Tty        bool
	Stdin      bool
	StdinOnce  bool
	// Spec is the OCI-level request; Name, Terminal, Stdin and RootfsPath
	// are filled in from the fields above.
	Spec spec.App
	// ImageVolumes are images mounted read-only into the app.
	ImageVolumes []ImageVolumeConfig
}

// SpecOpt edits an app's generated OCI spec before its bundle is
// written, as containerd's container opts do (NRI adjustments are one);
// a is the app's record as it will be saved. An error fails AddApp.
type SpecOpt func(a *App, s *specs.Spec) error

// AddApp creates an app in a ready pod: its rootfs on the image's layers,
// its bundle, and its container in the supervisor (created, not started).
// opts edit the generated spec; the spec they leave is validated.
func (m *Manager) AddApp(ctx context.Context, podID string, cfg AppConfig, opts ...SpecOpt) (_ *App, retErr error) {
	lock, err := m.l.lock(podID)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	p, err := m.l.LoadPod(podID)
	if err != nil {
		return nil, err
	}
	if p.State != PodReady {
		return nil, errdefs.FailedPrecondition("pod %s is %s, not ready", p.ID, p.State)
	}
	if err := spec.CheckName("app name", cfg.Name); err != nil {
		return nil, err
	}
	apps, err := m.l.ListApps(podID)
	if err != nil {
		return nil, err
	}
	for _, a := range apps {
		if a.Name == cfg.Name && a.Attempt == cfg.Attempt {
			return nil, errdefs.AlreadyExists("app %q (attempt %d) already exists in pod %s as %s", cfg.Name, cfg.Attempt, podID, a.ID)
		}
	}
	// Hold image GC off until the app records the layers it stacks.
	release, err := m.opts.Images.Hold()
	if err != nil {
		return nil, err
	}
	defer release()
	img, err := m.opts.Images.Get(cfg.Image)
	if err != nil {
		return nil, err
	}
	imgCfg, err := m.opts.Images.Config(img)
	if err != nil {
		return nil, err
	}
	layers, err := m.opts.Images.LayerDirs(img)
	if err != nil {
		return nil, err
	}

	id := cfg.ID
	if id == "" {
		id = newID()
	} else if !appIDRE.MatchString(id) {
		return nil, errdefs.InvalidArgument("app id %q: want 32 lower-case hex digits", id)
	} else if _, err := os.Stat(m.l.AppDir(podID, id)); err == nil {
		return nil, errdefs.AlreadyExists("app id %s is taken", id)
	}
	a := &App{
		ID: id, PodID: podID, Name: cfg.Name, Attempt: cfg.Attempt, Image: cfg.Image, ImageID: img.ID,
		ImageRef: imageRef(img), Labels: cfg.Labels, Annotations: cfg.Annotations, LogPath: cfg.LogPath,
		Tty: cfg.Tty, Stdin: cfg.Stdin, StdinOnce: cfg.StdinOnce, StopSignal: imgCfg.Config.StopSignal,
		Mounts: cfg.Spec.Mounts, State: AppCreated, CreatedAt: time.Now().UTC(),
	}
	if cfg.StopSignal != "" {
		if _, err := parseSignal(cfg.StopSignal); err != nil {
			return nil, err
		}
		a.StopSignal = cfg.StopSignal
	}
	for _, l := range img.Layers {
		a.Layers = append(a.Layers, l.ChainID)
	}
	appDir := m.l.AppDir(podID, a.ID)
	if a.LogPath == "" {
		a.LogPath = filepath.Join(appDir, "app.log")
	}
	var u undo
	defer func() {
		if retErr != nil {
			u.run("add app " + a.ID)
		}
	}()
	u.add(func() error { return os.RemoveAll(appDir) })
	if err := m.makeAppDirs(p, a.ID); err != nil {
		return nil, err
	}
	if err := m.l.saveApp(a); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(m.l.Bundle(podID, a.ID), "rootfs")
	var idmap *rootfsIDMap
	if p.IDMap != nil {
		idmap = &rootfsIDMap{userNS: p.UserNS, rootUID: int(p.IDMap.UIDMap[0].HostID), rootGID: int(p.IDMap.GIDMap[0].HostID)}
	}
	if err := mountRootfs(layers, filepath.Join(appDir, "fs"), rootfs, idmap); err != nil {
		return nil, err
	}
	u.add(func() error { return unmountRootfs(rootfs) })
	failAt(FailAfterRootfsMount)

	req := cfg.Spec
	if len(cfg.ImageVolumes) > 0 {
		u.add(func() error { return unmountImageVolumes(m.l.imageVolumesDir(podID, a.ID)) })
		vols, mounts, err := m.mountImageVolumes(podID, a.ID, podGID(p), cfg.ImageVolumes)
		if err != nil {
			return nil, err
		}
		a.ImageVolumes = vols
		req.Mounts = append(slices.Clone(req.Mounts), mounts...)
	}
	req.Name, req.ID, req.Terminal, req.Stdin, req.RootfsPath = cfg.Name, a.ID, cfg.Tty, cfg.Stdin, rootfs
	s, err := spec.Generate(imgCfg.Config, func(path string) ([]byte, error) { return m.opts.Images.ReadImageFile(img, path) }, req, m.specPod(p), spec.Flavor(p.Flavor))
	if err != nil {
		return nil, err
	}
	for _, opt := range opts {
		if err := opt(a, s); err != nil {
			return nil, err
		}
	}
	if err := writeBundle(m.l.Bundle(podID, a.ID), s); err != nil {
		return nil, err
	}
	if len(opts) > 0 {
		if err := spec.Validate(m.l.Bundle(podID, a.ID)); err != nil {
			return nil, err
		}
	}
	if s.Process != nil {
		a.User = fmt.Sprintf("%d:%d", s.Process.User.UID, s.Process.User.GID)
	}
	if dir := filepath.Dir(a.LogPath); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	// A supervisor that dies while it creates the container leaves it half made.
	u.add(func() error {
		if m.SupervisorAlive(context.Background(), podID) {
			return nil // it undid its own creation
		}
		return m.destroyContainers(podID, a)
	})
	var st proto.AppState
	err = m.call(ctx, podID, proto.MethodAddApp, proto.AddAppParams{
		Name: a.ID, ContainerID: a.ID, Bundle: m.l.Bundle(podID, a.ID), LogPath: a.LogPath,
		ExitFile: m.l.ExitFile(podID, a.ID), Stdin: a.Stdin, StdinOnce: a.StdinOnce, Terminal: a.Tty,
	}, &st)
	if err != nil {
		return nil, err
	}
	a.Pid = st.Pid
	if err := m.l.saveApp(a); err != nil {
		m.call(context.Background(), podID, proto.MethodRemove, proto.NameParams{Name: a.ID}, nil)
		return nil, err
	}
	return a, nil
}

func imageRef(img image.Image) string {
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return img.ID.String()
}

func (m *Manager) specPod(p *Pod) spec.Pod {
	etc := m.l.EtcDir(p.ID)
	var userNS *spec.UserNamespace
	if p.UserNS != "" {
		userNS = &spec.UserNamespace{Path: p.UserNS}
	}
	return spec.Pod{
		ID: p.ID, Name: p.Name, Hostname: p.Hostname,
		NetNSPath: p.NetNS, IPCNSPath: p.IPCNS, UTSNSPath: p.UTSNS,
		SharePID: p.SharePID, PIDNSPath: p.PIDNS,
		HostNetwork: p.HostNetwork, HostPID: p.HostPID, HostIPC: p.HostIPC,
		CgroupParent: p.CgroupParent, SystemdCgroup: m.opts.SystemdCgroup,
		ResolvConfPath: filepath.Join(etc, "resolv.conf"), HostsPath: filepath.Join(etc, "hosts"),
		HostnamePath: filepath.Join(etc, "hostname"), Sysctls: p.Sysctls,
		UserNS: userNS,
	}
}

// findApp resolves an app by ID, unique ID prefix or name (the newest
// attempt) within a pod.
func (m *Manager) findApp(podID, idOrName string) (*App, error) {
	apps, err := m.l.ListApps(podID)
	if err != nil {
		return nil, err
	}
	var found *App
	for _, a := range apps {
		if a.ID == idOrName {
			return a, nil
		}
		if a.Name == idOrName && (found == nil || a.Attempt >= found.Attempt) {
			found = a
		}
	}
	if found != nil {
		return found, nil
	}
	for _, a := range apps {
		if len(idOrName) >= 4 && strings.HasPrefix(a.ID, idOrName) {
			if found != nil {
				return nil, errdefs.InvalidArgument("app %q is ambiguous in pod %s", idOrName, podID)
			}
			found = a
		}
	}
	if found == nil {
		return nil, errdefs.NotFound("app %q not found in pod %s", idOrName, podID)
	}
	return found, nil
}

// StartApp starts a created app.
func (m *Manager) StartApp(ctx context.Context, podID, app string) (*App, error) {
	lock, err := m.l.lock(podID)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	a, err := m.findApp(podID, app)
	if err != nil {
		return nil, err
	}
	if err := state.Check("app "+a.Name, a.State, AppRunning); err != nil {
		return nil, err
	}
	var st proto.AppState
	if err := m.call(ctx, podID, proto.MethodStartApp, proto.NameParams{Name: a.ID}, &st); err != nil {
		return nil, err
	}
	a.State, a.StartedAt, a.Pid = AppRunning, st.StartedAt, st.Pid
	if st.Exit != nil {
		applyExit(a, st.Exit)
	}
	return a, m.l.saveApp(a)
}

// StopApp stops an app: its stop signal (the image's StopSignal, else
// SIGTERM), then SIGKILL after timeout. Stopping an exited app is a no-op.
func (m *Manager) StopApp(ctx context.Context, podID, app string, timeout time.Duration) (*App, error) {
	lock, err := m.l.lock(podID)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	a, err := m.findApp(podID, app)
	if err != nil {
		return nil, err
	}
	return a, m.stopApp(ctx, a, timeout)
}

func (m *Manager) stopApp(ctx context.Context, a *App, timeout time.Duration) error {
	if a.State == AppExited {
		return nil
	}
	sig := syscall.SIGTERM
	if a.StopSignal != "" {
		if s, err := parseSignal(a.StopSignal); err == nil {
			sig = s
		}
	}
	var st proto.AppState
	err := m.call(ctx, a.PodID, proto.MethodStopApp, proto.StopAppParams{Name: a.ID, Signal: int(sig), Timeout: timeout}, &st)
	if errdefs.IsNotFound(err) || errors.Is(err, errdefs.ErrUnavailable) {
		// The supervisor is gone (or never had the app): nothing runs.
		return m.markGone(a)
	}
	if err != nil {
		return err
	}
	if st.Exit != nil {
		applyExit(a, st.Exit)
	}
	return m.l.saveApp(a)
}

// markGone records an app whose supervisor is gone without an exit file.
func (m *Manager) markGone(a *App) error {
	fresh, err := m.l.LoadApp(a.PodID, a.ID)
	if err == nil && fresh.State == AppExited {
		*a = *fresh
		return nil
	}
	a.State, a.ExitCode, a.Reason, a.FinishedAt, a.Pid = AppExited, 255, "Error", time.Now().UTC(), 0
	a.Message = "the pod supervisor is gone; the app was killed with it"
	return m.l.saveApp(a)
}

// RemoveApp removes an app: kills it if it runs, removes its container,
// unmounts its rootfs and deletes its directory (CLI logs included; a
// CRI log path outside the pod stays for kubelet).
func (m *Manager) RemoveApp(ctx context.Context, podID, app string) error {
	lock, err := m.l.lock(podID)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	a, err := m.findApp(podID, app)
	if err != nil {
		return err
	}
	return m.removeApp(ctx, a)
}

func (m *Manager) removeApp(ctx context.Context, a *App) error {
	err := m.call(ctx, a.PodID, proto.MethodRemove, proto.NameParams{Name: a.ID}, nil)
	if err != nil && !errdefs.IsNotFound(err) && !errors.Is(err, errdefs.ErrUnavailable) {
		return err
	}
	if err != nil && m.containersLeft(a) {
		// No supervisor to do it: stage1 cleans up what it would have.
		if err := m.destroyContainers(a.PodID, a); err != nil {
			return err
		}
	}
	if err := unmountRootfs(filepath.Join(m.l.Bundle(a.PodID, a.ID), "rootfs")); err != nil {
		return err
	}
	if err := unmountImageVolumes(m.l.imageVolumesDir(a.PodID, a.ID)); err != nil {
		return err
	}
	return os.RemoveAll(m.l.AppDir(a.PodID, a.ID))
}

// StopPod stops every app (timeout each), shuts the supervisor down and
// detaches the network. Idempotent.
func (m *Manager) StopPod(ctx context.Context, podID string, timeout time.Duration) error {
	lock, err := m.l.lock(podID)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	p, err := m.l.LoadPod(podID)
	if err != nil {
		return err
	}
	if p.State == PodExited {
		return nil // already down: apps, supervisor and network
	}
	return m.stopPod(ctx, p, timeout, PodStopped)
}

// ExitPod ends an ExitWithApps pod whose apps have all exited: it shuts
// its supervisor down and releases its network, as StopPod, and records
// it exited. It does nothing for a pod not ready, or with an app that has
// not exited or no app at all. The pod's supervisor runs it (through
// stage0's exit command) when the last app exits; a foreground run calls
// it too.
func (m *Manager) ExitPod(ctx context.Context, podID string) error {
	lock, err := m.l.lock(podID)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	p, err := m.l.LoadPod(podID)
	if err != nil {
		return err
	}
	if !state.Can(p.State, PodExited) {
		return nil
	}
	if !p.ExitWithApps {
		return errdefs.FailedPrecondition("pod %s does not exit with its apps", p.ID)
	}
	apps, err := m.l.ListApps(p.ID)
	if err != nil {
		return err
	}
	if len(apps) == 0 {
		return nil
	}
	for _, a := range apps {
		if a.State != AppExited {
			return nil
		}
	}
	return m.stopPod(ctx, p, 0, PodExited)
}

func (m *Manager) stopPod(ctx context.Context, p *Pod, timeout time.Duration, final PodState) error {
	apps, err := m.l.ListApps(p.ID)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range apps {
		if err := m.stopApp(ctx, a, timeout); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := m.call(ctx, p.ID, proto.MethodShutdown, nil, nil); err != nil && !errors.Is(err, errdefs.ErrUnavailable) {
		return err
	}
	if m.containersLeft(apps...) {
		// A supervisor that is gone (or failed to remove an app) leaves
		// its containers: stage1 removes them.
		errs = append(errs, m.destroyContainers(p.ID, apps...))
	}
	if p.NetNS != "" && m.opts.Network != nil {
		if err := m.opts.Network.Teardown(ctx, p.ID, p.NetNS, p.Ports); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.State = final
	if p.FinishedAt.IsZero() {
		p.FinishedAt = time.Now().UTC()
	}
	return m.l.savePod(p)
}

// endPidnsHolder ends the process holding a shared pid namespace when
// its supervisor died before doing so, and unpins the namespace.
func (m *Manager) endPidnsHolder(p *Pod) error {
	if pid := readPidFile(proto.HolderPidPath(m.l.RunDir(p.ID))); pid > 0 {
		killHolder(pid) // liveness.go
	}
	return unpinNS(p.PIDNS)
}

// isPidnsHolder checks a recorded pid still is a holder before killing it:
// pids are reused.
func isPidnsHolder(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && (strings.HasSuffix(string(b), "\x00pidns-init\x00") || strings.Contains(string(b), "\x00ns-holder\x00--pid-ns\x00"))
}

// removePodCgroups has stage1 remove the pid namespace holder's leaf
// (left by a supervisor that died, or by a user namespace's holder) and
// the pod's cgroup when runclet's libcontainer made it (cgroupfs; under
// systemd the slice goes with its last unit).
func (m *Manager) removePodCgroups(p *Pod) error {
	var args proto.DestroyArgs
	if p.PIDNS != "" {
		if cg, err := m.holderCgroup(p); err == nil {
			args.HolderCgroup = cg
		}
	}
	if p.CgroupParentOwned && !m.opts.SystemdCgroup {
		args.CgroupParent = p.CgroupParent
	}
	if args.HolderCgroup == "" && args.CgroupParent == "" {
		return nil
	}
	return m.destroy(args, p.ID)
}

// RemovePod stops the pod if needed and removes everything it was:
// apps, rootfs mounts, namespaces, cgroups, directories. Removing a pod
// that is already gone is not an error for the caller to handle twice:
// it returns NotFound.
func (m *Manager) RemovePod(ctx context.Context, podID string) error {
	lock, err := m.l.lock(podID)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	p, err := m.l.LoadPod(podID)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if p == nil {
		// A pod whose record was never written (crash at creation).
		p = &Pod{ID: podID}
	}
	return m.removePod(ctx, p)
}

func (m *Manager) removePod(ctx context.Context, p *Pod) error {
	if !p.Inactive() {
		if err := m.stopPod(ctx, p, 0, PodStopped); err != nil {
			return fmt.Errorf("remove pod %s: %w", p.ID, err)
		}
	}
	apps, _ := m.l.ListApps(p.ID)
	var errs []error
	for _, a := range apps {
		if err := m.removeApp(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, m.removeStrayAppDirs(p.ID)) // directories whose record was never written
	}
	errs = append(errs, m.endPidnsHolder(p), network.RemoveNetNS(p.NetNS), unpinNS(p.UTSNS), unpinNS(p.IPCNS), unpinNS(p.UserNS))
	// A crash between pinning a namespace and recording it leaves a pin
	// the record does not name.
	if ents, err := os.ReadDir(filepath.Join(m.l.RunDir(p.ID), "ns")); err == nil {
		for _, e := range ents {
			errs = append(errs, unpinNS(filepath.Join(m.l.RunDir(p.ID), "ns", e.Name())))
		}
	}
	errs = append(errs, m.removePodCgroups(p))
	if p.CgroupParentOwned && m.opts.SystemdCgroup {
		errs = append(errs, stopSlice(ctx, p.CgroupParent))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.ID, err)
	}
	if err := os.RemoveAll(m.l.RunDir(p.ID)); err != nil {
		return err
	}
	m.hellos.Delete(p.ID)
	// Out of sight first, then removed: a process that would open the
	// pod's lock file now (the exit command, a gc) fails to find the pod
	// instead of making a new lock file that keeps its directory from
	// being removed, and no reader sees half a pod.
	tomb := filepath.Join(m.l.podsDir(), removingPrefix+p.ID)
	if err := os.Rename(m.l.PodDir(p.ID), tomb); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(tomb); err != nil {
		return err
	}
	return m.forgetPodGroup(p)
}

// PodStatus returns a pod and its apps as on disk, and whether the
// processes holding a ready pod still run (Pod.Broken, see checkAlive).
func (m *Manager) PodStatus(ctx context.Context, podID string) (*Pod, []*App, error) {
	p, err := m.l.LoadPod(podID)
	if err != nil {
		return nil, nil, err
	}
	apps, err := m.l.ListApps(podID)
	if err != nil {
		return nil, nil, err
	}
	m.checkAlive(ctx, p, apps) // liveness.go
	return p, apps, nil
}

// FindPod resolves a pod by ID, unique ID prefix or name.
func (m *Manager) FindPod(idOrName string) (*Pod, error) {
	if p, err := m.l.LoadPod(idOrName); err == nil {
		return p, nil
	}
	pods, err := m.l.ListPods()
	if err != nil {
		return nil, err
	}
	var found []*Pod
	for _, p := range pods {
		if p.Name == idOrName || (len(idOrName) >= 4 && strings.HasPrefix(p.ID, idOrName)) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return nil, errdefs.NotFound("pod %q not found", idOrName)
	case 1:
		return found[0], nil
	}
	cands := make([]string, 0, len(found))
	for _, p := range found {
		c := p.ID + " (" + p.Name
		if p.Namespace != "" {
			c += ", CRI pod in namespace " + p.Namespace
		}
		cands = append(cands, c+", "+string(p.State)+")")
	}
	return nil, errdefs.InvalidArgument("pod %q is ambiguous: it names %d pods: %s; use a pod ID", idOrName, len(found), strings.Join(cands, ", "))
}

// ListPods lists every pod.
func (m *Manager) ListPods() ([]*Pod, error) { return m.l.ListPods() }

// GCPreparing removes only the pods whose creation a crash interrupted
// (state preparing, or no readable record), and the apps whose creation
// a crash interrupted in the other pods, skipping pods somebody is working
// on. A CRI server calls it at start: stopped pods and their exit
// statuses belong to kubelet, which removes them itself.
func (m *Manager) GCPreparing(ctx context.Context) (GCResult, error) {
	return m.gc(ctx, func(p *Pod) bool { return p.State == PodPreparing })
}

// GCResult says what GC removed.
type GCResult struct {
	Pods []string `json:"pods"`
	// Apps are half-made apps removed from pods that stay.
	Apps []string `json:"apps,omitempty"`
}

// DefaultGCGrace is how long gc keeps exited and stopped pods (rkt's
// default): their exit statuses and logs stay readable meanwhile.
const DefaultGCGrace = 30 * time.Minute

// GCOptions say what GC collects.
type GCOptions struct {
	// Grace is how long exited and stopped pods are kept after they
	// finished; 0 collects them at once.
	Grace time.Duration
	// IncludeCRI also collects the CRI's (kubelet's) inactive pods and
	// those whose supervisor died. Without it GC leaves kubelet's pods
	// alone (kubelet removes its own) except the half-made ones a crash
	// left, which nobody owns.
	IncludeCRI bool
}

// GC removes pods whose creation crashed (preparing, with nobody holding
// their lock, or without a record), exited and stopped pods older than
// the grace, pods whose supervisor died, with all they leaked, and the
// half-made apps of the other pods. Pods being worked on are skipped, and
// so are the CRI's pods unless asked.
func (m *Manager) GC(ctx context.Context, o GCOptions) (GCResult, error) {
	now := time.Now()
	return m.gc(ctx, func(p *Pod) bool {
		switch {
		case p.State == PodPreparing:
			return true
		case p.OwnedByCRI() && !o.IncludeCRI:
			return false
		case p.Inactive():
			return now.Sub(p.FinishedAt) >= o.Grace // a record without the time predates it: old
		case p.State == PodReady:
			return !m.SupervisorAlive(ctx, p.ID)
		}
		return false
	})
}

// gc removes the pods collect picks, plus pods without a readable record,
// and the half-made apps of the other pods, skipping any pod whose lock
// is held; and the staging directories of crashed creations.
func (m *Manager) gc(ctx context.Context, collect func(*Pod) bool) (GCResult, error) {
	ents, err := os.ReadDir(filepath.Join(m.l.Root, "pods"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return GCResult{}, err
	}
	var res GCResult
	var removed []string
	errs := []error{m.gcStaging(ents)}
	for _, e := range ents {
		id := e.Name()
		if strings.HasPrefix(id, ".") {
			continue // staging: gcStaging's
		}
		lock, err := tryLock(m.l.lockFile(id))
		if err != nil || lock == nil {
			continue // busy: someone is creating or changing it
		}
		p, err := m.l.LoadPod(id)
		if err != nil {
			if _, serr := os.Stat(m.l.PodDir(id)); errors.Is(serr, fs.ErrNotExist) {
				lock.Unlock() // removed meanwhile by whoever held it
				continue
			}
			p = &Pod{ID: id, State: PodPreparing} // a crash before the first record
		}
		if err != nil || collect(p) {
			if err := m.removePod(ctx, p); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, id)
			}
		} else {
			apps, err := m.gcHalfMadeApps(ctx, p)
			res.Apps = append(res.Apps, apps...)
			errs = append(errs, err)
		}
		lock.Unlock()
	}
	slices.Sort(removed)
	res.Pods = removed
	return res, errors.Join(errs...)
}

// gcStaging removes the staging directories crashed creations left, and
// what crashed removals left. A creator holds the names lock for as long
// as its staging directory exists, so with that lock taken every one left
// is debris; if it is busy, they wait for the next gc. A removed pod's
// directory is only ever deleted (a remover at work does the same).
func (m *Manager) gcStaging(ents []os.DirEntry) error {
	var stale []string
	for _, e := range ents {
		switch {
		case strings.HasPrefix(e.Name(), stagingPrefix):
			stale = append(stale, e.Name())
		case strings.HasPrefix(e.Name(), removingPrefix):
			// Best effort: a remover may be at it at the same time.
			os.RemoveAll(filepath.Join(m.l.podsDir(), e.Name()))
		}
	}
	if len(stale) == 0 {
		return nil
	}
	names, err := fsutil.TryLockFile(m.l.namesLockFile())
	if err != nil || names == nil {
		return err
	}
	defer names.Unlock()
	var errs []error
	for _, n := range stale {
		errs = append(errs, os.RemoveAll(filepath.Join(m.l.podsDir(), n)))
	}
	return errors.Join(errs...)
}
