package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/pod"
)

// NRI (the Node Resource Interface, github.com/containerd/nri) lets
// plugins hook pod and container lifecycle: the daemon runs NRI's runtime
// side (pkg/adaptation), which takes plugin connections on a unix socket
// and starts pre-installed plugins, and the handlers call it at each step.
//
// The rules the handlers follow (and critest's NRI specs check):
//
//   - A pod sandbox or container enters the index only after its
//     RunPodSandbox / CreateContainer event returned, so nothing lists or
//     starts it while plugins are still being asked. A plugin's error fails
//     the RPC and undoes everything (plugins then hear StopPodSandbox and
//     RemovePodSandbox, or StopContainer and RemoveContainer).
//   - StopPodSandbox stops every container first (each one's StopContainer
//     event), then sends StopPodSandbox once per pod while the pod is still
//     there, then stops the pod. A stopped pod's StopPodSandbox sends nothing.
//   - Every container gets exactly one StopContainer event when it exits,
//     however it exits (StopContainer, StopPodSandbox, removal, or by
//     itself: the exit the watcher sees). The events of one container are
//     serialized, so its exit never overtakes its PostStartContainer.
//   - Pod and container creation hold off plugin synchronization from
//     before their event until they are in the index, so a plugin that
//     connects meanwhile either sees them in Synchronize or hears their
//     event, never neither.

// NRIOptions turn NRI on (Options.NRI nil: off).
type NRIOptions struct {
	// SocketPath is where external plugins connect; "": NRI's default,
	// /var/run/nri/nri.sock.
	SocketPath string
	// PluginPath holds pre-installed plugins, started with the daemon;
	// "": NRI's default, /opt/nri/plugins.
	PluginPath string
	// PluginConfigPath holds pre-installed plugins' configuration; "":
	// NRI's default, /etc/nri/conf.d.
	PluginConfigPath string
	// RegistrationTimeout bounds a plugin's registration; 0: NRI's
	// default (5s).
	RegistrationTimeout time.Duration
	// RequestTimeout bounds a plugin's handling of one event; 0: NRI's
	// default (2s).
	RequestTimeout time.Duration
}

// nriHooks is the daemon's side of NRI. A nil *nriHooks (NRI off) is
// valid: the methods the handlers call do nothing on it.
type nriHooks struct {
	s      *Server
	nri    *adaptation.Adaptation
	log    *slog.Logger
	socket string

	mu     sync.Mutex
	ctrs   map[string]*nriCtrState
	pods   map[string]*nriPodState
	closed bool
	wg     sync.WaitGroup // exit events in flight
}

// nriCtrState serializes one container's events and remembers whether
// its StopContainer event was sent.
type nriCtrState struct {
	mu      sync.Mutex
	stopped bool
}

// nriPodState serializes one pod's stop and remembers whether its
// StopPodSandbox event was sent.
type nriPodState struct {
	mu      sync.Mutex
	stopped bool
}

// newNRI makes NRI's runtime side; start starts it.
func newNRI(s *Server, o NRIOptions) (*nriHooks, error) {
	n := &nriHooks{s: s, log: s.log.With("component", "nri"), ctrs: map[string]*nriCtrState{}, pods: map[string]*nriPodState{}}
	setNRILogger(n.log)
	if o.RegistrationTimeout > 0 {
		adaptation.SetPluginRegistrationTimeout(o.RegistrationTimeout)
	}
	if o.RequestTimeout > 0 {
		adaptation.SetPluginRequestTimeout(o.RequestTimeout)
	}
	if o.SocketPath == "" {
		o.SocketPath = adaptation.DefaultSocketPath
	}
	opts := []adaptation.Option{adaptation.WithSocketPath(o.SocketPath)}
	if o.PluginPath != "" {
		opts = append(opts, adaptation.WithPluginPath(o.PluginPath))
	}
	if o.PluginConfigPath != "" {
		opts = append(opts, adaptation.WithPluginConfigPath(o.PluginConfigPath))
	}
	a, err := adaptation.New("runclet", s.opts.Version, n.synchronize, n.updateContainers, opts...)
	if err != nil {
		return nil, fmt.Errorf("nri: %w", err)
	}
	n.nri, n.socket = a, o.SocketPath
	return n, nil
}

// start starts NRI once the index is built: pre-installed plugins are
// started and synchronized with it, then the socket takes connections.
func (n *nriHooks) start() error {
	// Containers that exited before the daemon started were never
	// running for these plugins: no StopContainer event for them.
	n.mu.Lock()
	for _, c := range n.s.idx.containers() {
		if _, ok := n.ctrs[c.app.ID]; !ok && c.app.State == pod.AppExited {
			n.ctrs[c.app.ID] = &nriCtrState{stopped: true}
		}
	}
	n.mu.Unlock()
	// Plugins run as root; so must whatever connects. NRI binds its
	// socket with the umask's mode (and makes its directory 0700 only when
	// it creates it): the directory must be root's alone before the
	// socket exists, and the socket 0600 before that directory is opened.
	sockDir := filepath.Dir(n.socket)
	if err := os.MkdirAll(sockDir, 0o700); err != nil {
		return fmt.Errorf("nri: %w", err)
	}
	if err := fsutil.PrivateDir(sockDir, nil); err != nil {
		return fmt.Errorf("nri: %w", err)
	}
	if err := n.nri.Start(); err != nil {
		n.nri.Stop()
		return fmt.Errorf("nri: %w", err)
	}
	if err := fsutil.ChmodNoFollow(n.socket, 0o600); err != nil {
		n.nri.Stop()
		return fmt.Errorf("nri: %w", err)
	}
	n.log.Info("NRI started", "socket", n.socket)
	return nil
}

// stop waits for exit events in flight and stops NRI (its socket and
// plugin connections; pre-installed plugins are stopped).
func (n *nriHooks) stop() {
	if n == nil {
		return
	}
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.wg.Wait()
	n.nri.Stop()
}

// blockSync holds plugin synchronization off until the returned function
// is called (see the rules above).
func (n *nriHooks) blockSync() func() {
	if n == nil {
		return func() {}
	}
	return n.nri.BlockPluginSync().Unblock
}

func (n *nriHooks) ctrState(id string) *nriCtrState {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.ctrs[id]
	if !ok {
		st = &nriCtrState{}
		n.ctrs[id] = st
	}
	return st
}

// forgetCtr drops a container's state if it still is st.
func (n *nriHooks) forgetCtr(id string, st *nriCtrState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctrs[id] == st {
		delete(n.ctrs, id)
	}
}

func (n *nriHooks) podState(id string) *nriPodState {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.pods[id]
	if !ok {
		st = &nriPodState{}
		n.pods[id] = st
	}
	return st
}

// synchronize is NRI's SyncFn: a plugin that connects is told every pod
// and container the index has.
func (n *nriHooks) synchronize(ctx context.Context, cb adaptation.SyncCB) error {
	var pods []*api.PodSandbox
	var ctrs []*api.Container
	for _, v := range n.s.idx.sandboxes() {
		pods = append(pods, nriPodSandbox(v.pod))
		for _, c := range v.containers {
			ctrs = append(ctrs, n.container(c))
		}
	}
	updates, err := cb(ctx, pods, ctrs)
	if err != nil {
		return err
	}
	if _, err := n.applyUpdates(ctx, updates); err != nil {
		return fmt.Errorf("container updates a plugin asked for while synchronizing: %w", err)
	}
	return nil
}

// updateContainers is NRI's UpdateFn: updates a plugin asks for on its
// own go through UpdateContainerResources' path; those that failed are
// returned to the plugin (and logged).
func (n *nriHooks) updateContainers(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	failed, _ := n.applyUpdates(ctx, updates)
	return failed, nil
}

// applyUpdates applies container updates plugins asked for. Failures of
// updates that may not fail are returned (and joined in the error);
// the others are logged.
func (n *nriHooks) applyUpdates(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	var failed []*api.ContainerUpdate
	var errs []error
	for _, u := range updates {
		err := n.s.updateFromNRI(ctx, u)
		if err == nil {
			continue
		}
		if u.GetIgnoreFailure() {
			n.log.Info("an NRI container update failed (the plugin ignores that)", "container", u.GetContainerId(), "err", err)
			continue
		}
		n.log.Warn("an NRI container update failed", "container", u.GetContainerId(), "err", err)
		failed = append(failed, u)
		errs = append(errs, err)
	}
	return failed, errors.Join(errs...)
}

// updateFromNRI applies one plugin update to a created or running
// container, as UpdateContainerResources does.
func (s *Server) updateFromNRI(ctx context.Context, u *api.ContainerUpdate) error {
	c, err := s.idx.container(u.GetContainerId())
	if err != nil {
		return err
	}
	if c.app.ID != u.GetContainerId() {
		return errdefs.NotFound("container %q not found", u.GetContainerId())
	}
	r, bad := nriResources(u.GetLinux().GetResources(), s.features.SwapLimit)
	if len(bad) > 0 {
		return unsupportedNRI(bad)
	}
	return s.updateContainer(ctx, c, r)
}

// container is what plugins are told of an indexed container: the app
// record and, when it can be read, its bundle's OCI spec.
func (n *nriHooks) container(c *containerEntry) *api.Container {
	sp, err := n.s.rt.AppSpec(c.app.PodID, c.app.ID)
	if err != nil {
		sp = nil
	}
	return nriContainer(c.app, sp)
}

// podOf is the NRI view of an indexed pod; a pod gone from the index
// (removed meanwhile) is described by its ID only.
func (n *nriHooks) podOf(id string) *api.PodSandbox {
	if p, _, err := n.s.idx.sandbox(id); err == nil {
		return nriPodSandbox(p)
	}
	return &api.PodSandbox{Id: id}
}

// runPodSandbox sends RunPodSandbox for a pod made but not yet indexed.
func (n *nriHooks) runPodSandbox(ctx context.Context, p *pod.Pod) error {
	if n == nil {
		return nil
	}
	if err := n.nri.RunPodSandbox(ctx, &api.RunPodSandboxRequest{Pod: nriPodSandbox(p)}); err != nil {
		return fmt.Errorf("NRI: a plugin failed RunPodSandbox of pod sandbox %s: %w", p.ID, err)
	}
	return nil
}

// undoRunPodSandbox tells plugins that a pod they heard RunPodSandbox of
// (all, or those before the one that failed it) is gone again.
func (n *nriHooks) undoRunPodSandbox(ctx context.Context, p *pod.Pod) {
	if n == nil {
		return
	}
	pb := nriPodSandbox(p)
	if err := n.nri.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: pb}); err != nil {
		n.log.Warn("NRI StopPodSandbox of a pod sandbox whose creation failed", "pod", p.ID, "err", err)
	}
	if err := n.nri.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: pb}); err != nil {
		n.log.Warn("NRI RemovePodSandbox of a pod sandbox whose creation failed", "pod", p.ID, "err", err)
	}
}

// stopPodSandbox sends StopPodSandbox once per pod: stopContainers runs
// first (it stops the pod's containers), then plugins are told while the
// pod is still there. Plugin errors are logged: a pod is stopped anyway.
func (n *nriHooks) stopPodSandbox(ctx context.Context, podID string, stopContainers func()) {
	if n == nil {
		return
	}
	st := n.podState(podID)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped {
		return
	}
	stopContainers()
	st.stopped = true
	if err := n.nri.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: n.podOf(podID)}); err != nil {
		n.log.Warn("NRI StopPodSandbox failed; stopping the pod sandbox anyway", "pod", podID, "err", err)
	}
}

// podRemoval is what removePodSandbox tells plugins, described before
// the pod is removed (its bundles go with it).
type podRemoval struct {
	pod  *api.PodSandbox
	ctrs []*api.Container
}

// describePod captures a pod and its containers for removePodSandbox.
func (n *nriHooks) describePod(p *pod.Pod, ctrs []*containerEntry) *podRemoval {
	if n == nil {
		return nil
	}
	r := &podRemoval{pod: nriPodSandbox(p)}
	for _, c := range ctrs {
		r.ctrs = append(r.ctrs, n.container(c))
	}
	return r
}

// removePodSandbox tells plugins a pod and its containers are removed:
// each container's RemoveContainer (after its StopContainer, if that was
// not sent yet), then RemovePodSandbox.
func (n *nriHooks) removePodSandbox(ctx context.Context, r *podRemoval) {
	if n == nil || r == nil {
		return
	}
	for _, c := range r.ctrs {
		n.removeContainer(ctx, r.pod, c)
	}
	if err := n.nri.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: r.pod}); err != nil {
		n.log.Warn("NRI RemovePodSandbox failed", "pod", r.pod.Id, "err", err)
	}
	n.mu.Lock()
	delete(n.pods, r.pod.Id)
	n.mu.Unlock()
}

// ctrRemoval is what containerRemoved tells plugins, described before
// the container is removed (its bundle goes with it).
type ctrRemoval struct {
	pod *api.PodSandbox
	ctr *api.Container
}

// describeContainer captures an indexed container for containerRemoved.
func (n *nriHooks) describeContainer(c *containerEntry) *ctrRemoval {
	if n == nil {
		return nil
	}
	return &ctrRemoval{pod: n.podOf(c.app.PodID), ctr: n.container(c)}
}

// containerRemoved tells plugins a container was removed.
func (n *nriHooks) containerRemoved(ctx context.Context, r *ctrRemoval) {
	if n == nil || r == nil {
		return
	}
	n.removeContainer(ctx, r.pod, r.ctr)
}

// removeContainer sends a removed container's StopContainer (unless it
// was sent) and RemoveContainer, and forgets it.
func (n *nriHooks) removeContainer(ctx context.Context, pb *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	st := n.ctrState(ctr.Id)
	st.mu.Lock()
	defer st.mu.Unlock()
	ctr.State = api.ContainerState_CONTAINER_STOPPED // removal killed it if it ran
	n.sendStopLocked(ctx, st, pb, ctr)
	if err := n.nri.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pb, Container: ctr}); err != nil {
		n.log.Warn("NRI RemoveContainer failed", "container", ctr.Id, "err", err)
	}
	n.forgetCtr(ctr.Id, st)
}

// sendStopLocked sends a container's StopContainer event unless it was
// sent; the caller holds st.mu.
func (n *nriHooks) sendStopLocked(ctx context.Context, st *nriCtrState, pb *api.PodSandbox, ctr *api.Container) {
	if st.stopped {
		return
	}
	st.stopped = true
	resp, err := n.nri.StopContainer(ctx, &api.StopContainerRequest{Pod: pb, Container: ctr})
	if err != nil {
		n.log.Warn("NRI StopContainer failed", "container", ctr.Id, "err", err)
		return
	}
	n.applyUpdates(ctx, resp.GetUpdate()) // failures are logged
}

// containerStopped sends StopContainer for an indexed container that has
// exited, once.
func (n *nriHooks) containerStopped(ctx context.Context, id string) {
	if n == nil {
		return
	}
	st := n.ctrState(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	c, err := n.s.idx.container(id)
	if err != nil || c.app.ID != id {
		n.forgetCtr(id, st) // removed meanwhile (its removal told plugins)
		return
	}
	if c.app.State != pod.AppExited {
		return
	}
	n.sendStopLocked(ctx, st, n.podOf(c.app.PodID), n.container(c))
}

// containerExited is the watcher's news of an exit: the StopContainer
// event is sent on another goroutine, so the watcher never waits for a
// plugin (or for a start in progress that holds the container's events).
func (n *nriHooks) containerExited(id string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.containerStopped(context.Background(), id)
	}()
}

// startContainer runs start (which starts the app and updates the index)
// between the StartContainer event, whose failure fails the start, and
// PostStartContainer. An exit start already saw is sent right after.
func (n *nriHooks) startContainer(ctx context.Context, c *containerEntry, start func() (*pod.App, error)) (*pod.App, error) {
	if n == nil {
		return start()
	}
	st := n.ctrState(c.app.ID)
	st.mu.Lock()
	defer st.mu.Unlock()
	pb := n.podOf(c.app.PodID)
	if err := n.nri.StartContainer(ctx, &api.StartContainerRequest{Pod: pb, Container: n.container(c)}); err != nil {
		return nil, fmt.Errorf("NRI: a plugin failed StartContainer of container %s: %w", c.app.ID, err)
	}
	a, err := start()
	if err != nil {
		return nil, err
	}
	ctr := n.container(&containerEntry{app: a})
	if err := n.nri.PostStartContainer(ctx, &api.PostStartContainerRequest{Pod: pb, Container: ctr}); err != nil {
		n.log.Warn("NRI PostStartContainer failed", "container", a.ID, "err", err)
	}
	if fresh, err := n.s.idx.container(a.ID); err == nil && fresh.app.State == pod.AppExited {
		n.sendStopLocked(ctx, st, pb, n.container(fresh))
	}
	return a, nil
}

// createContainer makes an app for CreateContainer. With NRI, plugins
// are asked about the app's generated spec before its bundle is written,
// and their adjustments are applied to that spec (adjustSpec). The
// caller indexes the app.
func (s *Server) createContainer(ctx context.Context, p *pod.Pod, ac pod.AppConfig) (*pod.App, error) {
	n := s.nri
	if n == nil {
		return s.rt.AddApp(ctx, p.ID, ac)
	}
	pb := nriPodSandbox(p)
	var asked *api.Container // what plugins were told, once they were
	var updates []*api.ContainerUpdate
	a, err := s.rt.AddApp(ctx, p.ID, ac, func(a *pod.App, sp *specs.Spec) error {
		asked = nriContainer(a, sp)
		req := &api.CreateContainerRequest{Pod: pb, Container: asked}
		before := snapshotOf(asked)
		resp, err := n.nri.CreateContainer(ctx, req)
		if err != nil {
			return fmt.Errorf("NRI: a plugin failed CreateContainer of container %s (%s): %w", ac.Name, a.ID, err)
		}
		updates = resp.GetUpdate()
		if err := adjustSpec(sp, resp.GetAdjust(), before.removed(req.Container), s.features.SwapLimit); err != nil {
			return fmt.Errorf("container %s: %w", ac.Name, err)
		}
		return nil
	})
	if err != nil {
		if asked != nil {
			n.undoCreate(ctx, pb, asked)
		}
		return nil, err
	}
	n.applyUpdates(ctx, updates) // other containers'; failures are logged
	return a, nil
}

// undoCreate tells plugins a container they heard CreateContainer of is
// gone again.
func (n *nriHooks) undoCreate(ctx context.Context, pb *api.PodSandbox, ctr *api.Container) {
	if _, err := n.nri.StopContainer(ctx, &api.StopContainerRequest{Pod: pb, Container: ctr}); err != nil {
		n.log.Warn("NRI StopContainer of a container whose creation failed", "container", ctr.Id, "err", err)
	}
	if err := n.nri.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pb, Container: ctr}); err != nil {
		n.log.Warn("NRI RemoveContainer of a container whose creation failed", "container", ctr.Id, "err", err)
	}
}

// undoCreated tells plugins a container made for a client that went
// away is removed again.
func (n *nriHooks) undoCreated(ctx context.Context, p *pod.Pod, a *pod.App) {
	if n == nil {
		return
	}
	n.undoCreate(ctx, nriPodSandbox(p), n.container(&containerEntry{app: a}))
}

// postCreateContainer sends PostCreateContainer for an indexed container.
func (n *nriHooks) postCreateContainer(ctx context.Context, id string) {
	if n == nil {
		return
	}
	c, err := n.s.idx.container(id)
	if err != nil {
		return
	}
	if err := n.nri.PostCreateContainer(ctx, &api.PostCreateContainerRequest{Pod: n.podOf(c.app.PodID), Container: n.container(c)}); err != nil {
		n.log.Warn("NRI PostCreateContainer failed", "container", id, "err", err)
	}
}

// nriLogger is where NRI's own log lines go: NRI has one logger per
// process, set once, which forwards to the latest daemon's logger.
var nriLogger struct {
	once sync.Once
	l    atomic.Pointer[slog.Logger]
}

func setNRILogger(l *slog.Logger) {
	nriLogger.l.Store(l)
	nriLogger.once.Do(func() { nrilog.Set(slogNRI{}) })
}

// slogNRI is NRI's log interface over log/slog.
type slogNRI struct{}

func (slogNRI) Debugf(ctx context.Context, format string, args ...any) {
	nriLogger.l.Load().DebugContext(ctx, fmt.Sprintf(format, args...))
}

func (slogNRI) Infof(ctx context.Context, format string, args ...any) {
	nriLogger.l.Load().InfoContext(ctx, fmt.Sprintf(format, args...))
}

func (slogNRI) Warnf(ctx context.Context, format string, args ...any) {
	nriLogger.l.Load().WarnContext(ctx, fmt.Sprintf(format, args...))
}

func (slogNRI) Errorf(ctx context.Context, format string, args ...any) {
	nriLogger.l.Load().ErrorContext(ctx, fmt.Sprintf(format, args...))
}
