package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
)

// Options configure a Server.
type Options struct {
	Runtime Runtime
	// Stats is where stats and metrics are read; nil: Runtime.
	Stats StatsSource
	// Version is runclet's version, reported by the Version RPC.
	Version string
	// CgroupDriver is "cgroupfs" or "systemd".
	CgroupDriver string
	// DefaultFlavor is the flavor of the empty runtime handler.
	DefaultFlavor string
	// RuntimeHandlers maps handler names to flavors.
	RuntimeHandlers map[string]string
	// AllowFly lets the server run pods of flavor fly (config
	// cri.fly.enable): it adds the handler "fly" if RuntimeHandlers has no
	// handler of that name. Without it a handler of flavor fly, or a
	// default flavor fly, is a configuration error.
	AllowFly bool
	// LoadAppArmorDefault loads runclet's RuntimeDefault AppArmor profile
	// (where AppArmor is enabled); nil: apparmor_parser with the profile
	// spec.AppArmorProfile generates. Tests replace it.
	LoadAppArmorDefault func(context.Context) error
	// StreamAddress is the streaming server's host:port ("127.0.0.1:0").
	StreamAddress string
	// StreamIdleTimeout closes idle streaming connections.
	StreamIdleTimeout time.Duration
	// ResyncInterval is how often pods with live apps are re-read; 0: never.
	ResyncInterval time.Duration
	// Logger logs requests; nil means slog's default.
	Logger *slog.Logger
	// Info is shown as "config" by a verbose Status.
	Info any
	// MetricsAddress is the host:port serving Prometheus metrics at
	// /metrics ("127.0.0.1:9464"); "": not served.
	MetricsAddress string
	// NRI turns NRI on (see nri.go); nil: off.
	NRI *NRIOptions
}

// Server implements CRI v1's RuntimeService and ImageService.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	rt       Runtime
	src      StatsSource // stats and metrics numbers
	opts     Options
	features Features
	log      *slog.Logger
	appArmor *appArmorDefault
	idx      *index
	watch    *watcher
	events   *eventBroker
	stats    *statsCache
	grpc     *grpc.Server

	stream     streaming.Server
	streamHTTP *http.Server
	streamURL  string

	metrics     *metrics
	metricsHTTP *http.Server // nil unless Options.MetricsAddress
	metricsURL  string

	nri *nriHooks // nil unless Options.NRI

	imageUsers sync.Map // digest.Digest -> imageUser

	stopResync chan struct{}
	stopOnce   sync.Once
	wg         sync.WaitGroup
}

// New builds the server: it reads every CRI pod from disk into the index
// (removing what a crash left half-made), starts watching app exits and
// starts the streaming server. Serve then serves gRPC.
func New(ctx context.Context, opts Options) (_ *Server, retErr error) {
	if opts.Runtime == nil {
		return nil, errors.New("cri: no runtime")
	}
	if opts.DefaultFlavor == "" {
		opts.DefaultFlavor = pod.FlavorRunc
	}
	if opts.RuntimeHandlers == nil {
		opts.RuntimeHandlers = map[string]string{pod.FlavorRunc: pod.FlavorRunc}
	}
	if opts.StreamAddress == "" {
		opts.StreamAddress = "127.0.0.1:0"
	}
	if opts.StreamIdleTimeout <= 0 {
		opts.StreamIdleTimeout = streaming.DefaultConfig.StreamIdleTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := flyHandlers(&opts); err != nil {
		return nil, err
	}
	if opts.Stats == nil {
		opts.Stats = opts.Runtime
	}
	if opts.LoadAppArmorDefault == nil {
		opts.LoadAppArmorDefault = loadAppArmorDefault
	}
	s := &Server{
		rt: opts.Runtime, src: opts.Stats, opts: opts, features: opts.Runtime.Features(), log: opts.Logger,
		idx: newIndex(), events: newEventBroker(), stats: newStatsCache(), stopResync: make(chan struct{}),
		appArmor: &appArmorDefault{load: opts.LoadAppArmorDefault},
	}
	s.idx.events = s.events
	s.metrics = newMetrics(s.idx)
	if !s.features.Hugetlb {
		s.log.Warn("no hugetlb cgroup controller for runc on this host: containers' hugepage limits are ignored")
	}
	var err error
	if opts.NRI != nil {
		// Made before anything can call it; started once the index is built.
		if s.nri, err = newNRI(s, *opts.NRI); err != nil {
			return nil, err
		}
	}
	if s.watch, err = newWatcher(s.refreshApp); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.watch.close()
		}
	}()
	if err := s.rebuild(ctx); err != nil {
		return nil, err
	}
	if err := s.startStreaming(); err != nil {
		return nil, err
	}
	if err := s.startMetrics(); err != nil {
		s.streamHTTP.Close()
		return nil, err
	}
	if s.nri != nil {
		if err := s.nri.start(); err != nil {
			s.streamHTTP.Close()
			if s.metricsHTTP != nil {
				s.metricsHTTP.Close()
			}
			return nil, err
		}
	}
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(loggingInterceptor(s.log), metricsInterceptor(s.metrics), errorInterceptor),
		grpc.ChainStreamInterceptor(loggingStreamInterceptor(s.log), metricsStreamInterceptor(s.metrics), errorStreamInterceptor),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxSendMsgSize(math.MaxInt32),
	)
	runtimeapi.RegisterRuntimeServiceServer(s.grpc, s)
	runtimeapi.RegisterImageServiceServer(s.grpc, s)
	if opts.ResyncInterval > 0 {
		s.wg.Add(1)
		go s.resyncLoop(opts.ResyncInterval)
	}
	return s, nil
}

// Serve serves gRPC on ln until Stop.
func (s *Server) Serve(ln net.Listener) error { return s.grpc.Serve(ln) }

// Stop stops serving: in-flight RPCs get timeout to finish, then their
// connections are closed. Pods are not touched. Stopping twice is fine.
func (s *Server) Stop(timeout time.Duration) {
	s.stopOnce.Do(func() { s.stop(timeout) })
}

func (s *Server) stop(timeout time.Duration) {
	s.events.close() // event streams end now, or they would hold the graceful stop
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		s.log.Warn("graceful stop timed out; closing connections", "timeout", timeout)
		s.grpc.Stop()
		<-done
	}
	s.streamHTTP.Close()
	if s.metricsHTTP != nil {
		s.metricsHTTP.Close()
	}
	close(s.stopResync)
	s.wg.Wait()
	s.watch.close()
	s.nri.stop()
}

// StreamURL is the streaming server's base URL.
func (s *Server) StreamURL() string { return s.streamURL }

func (s *Server) startStreaming() error {
	ln, err := net.Listen("tcp", s.opts.StreamAddress)
	if err != nil {
		return fmt.Errorf("streaming server: %w", err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = ln.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	cfg.StreamIdleTimeout = s.opts.StreamIdleTimeout
	rt := &streamRuntime{s: s}
	inner, err := streaming.NewServer(cfg, rt)
	if err != nil {
		ln.Close()
		return err
	}
	// WebSocket protocols cri-streaming does not speak (client-go's v5
	// exec/attach, SPDY tunnelled port-forward) are served in front of it.
	s.stream = newWSServer(inner, rt, cfg.StreamIdleTimeout, s.log)
	s.streamURL = cfg.BaseURL.String()
	s.streamHTTP = &http.Server{Handler: s.stream, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := s.streamHTTP.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("streaming server stopped", "err", err)
		}
	}()
	return nil
}

// isCRIPod tells the pods kubelet made (through this daemon) from the
// CLI's: RunPodSandbox requires a namespace, the CLI never sets one.
func isCRIPod(p *pod.Pod) bool { return p.Namespace != "" }

// rebuild fills the index from disk: every CRI pod with its apps, each
// app's directory watched before its state is read (so no exit is missed
// in between). What a crash left half made (pods still preparing, apps
// whose creation was cut short) is removed first.
func (s *Server) rebuild(ctx context.Context) error {
	gc, err := s.rt.GCPreparing(ctx)
	for _, id := range gc.Pods {
		s.log.Info("removed a pod sandbox whose creation was interrupted", "pod", id)
	}
	for _, id := range gc.Apps {
		s.log.Info("removed a container whose creation was interrupted", "container", id)
	}
	if err != nil {
		s.log.Warn("removing what interrupted creations left", "err", err)
	}
	pods, err := s.rt.ListPods()
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	npods, nctrs := 0, 0
	for _, p := range pods {
		if !isCRIPod(p) || p.State == pod.PodPreparing {
			continue
		}
		fresh, apps, err := s.rt.PodStatus(ctx, p.ID)
		if errdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			// One unreadable pod must not keep kubelet from the others.
			s.log.Error("reading pod; it is not shown", "pod", p.ID, "err", err)
			continue
		}
		s.indexPod(fresh)
		if fresh.State == pod.PodReady && fresh.Broken == "" {
			s.watchPod(fresh.ID)
		}
		npods++
		for _, a := range apps {
			s.track(a)
			nctrs++
		}
	}
	s.log.Info("index built from disk", "pods", npods, "containers", nctrs)
	return nil
}

// indexPod watches a pod's directory (for another process stopping or
// removing it) and puts the pod in the index.
func (s *Server) indexPod(p *pod.Pod) {
	if err := s.watch.addPod(p.ID, s.rt.PodDir(p.ID)); err != nil {
		s.log.Warn("watching a pod for changes made by others", "pod", p.ID, "err", err)
	}
	s.idx.addPod(p)
	if _, err := os.Stat(s.rt.PodDir(p.ID)); errors.Is(err, fs.ErrNotExist) {
		s.forgetPod(p.ID) // removed before the watch could see it
	}
}

// track watches an app's directory and puts the app in the index, read
// again after the watch is in place.
func (s *Server) track(a *pod.App) {
	if err := s.watch.add(appKey{a.PodID, a.ID}, s.rt.AppDir(a.PodID, a.ID)); err != nil {
		s.log.Warn("watching an app for its exit; the resync will catch it", "container", a.ID, "err", err)
	}
	if fresh, err := s.rt.LoadApp(a.PodID, a.ID); err == nil {
		a = fresh
	}
	if !s.idx.addContainer(s.containerEntry(a)) {
		s.watch.remove(a.ID) // its pod went away meanwhile
	}
}

// containerEntry completes an app with what the CRI shows of it.
func (s *Server) containerEntry(a *pod.App) *containerEntry {
	c := &containerEntry{app: a, imageName: a.Image}
	if img, err := s.rt.GetImage(a.ImageID.String()); err == nil && len(img.RepoTags) > 0 {
		if !slices.Contains(img.RepoTags, a.Image) {
			c.imageName = img.RepoTags[0]
		}
	}
	if sp, err := s.rt.AppSpec(a.PodID, a.ID); err == nil {
		c.user, c.resources = specUser(sp), specResources(sp)
	}
	return c
}

// refreshApp re-reads one app after inotify reported a change, or its
// pod when the key names no app (pod.json changed or the pod is gone).
func (s *Server) refreshApp(k appKey) {
	if k.appID == "" {
		s.refreshPod(context.Background(), k.podID)
		return
	}
	a, err := s.rt.LoadApp(k.podID, k.appID)
	if errdefs.IsNotFound(err) {
		// Removed: by the daemon's own RemoveContainer (then this is a
		// no-op) or behind its back (runclet app rm --force).
		s.watch.remove(k.appID)
		s.idx.removeContainer(k.appID)
		s.stats.forget(k.appID)
		return
	}
	if err != nil {
		return
	}
	if s.idx.updateApp(a) && a.State == pod.AppExited {
		s.nri.containerExited(a.ID)
	}
}

// refreshPod re-reads a pod and its apps after a change to the pod.
func (s *Server) refreshPod(ctx context.Context, id string) {
	p, apps, err := s.rt.PodStatus(ctx, id)
	if errdefs.IsNotFound(err) {
		s.forgetPod(id)
		return
	}
	if err != nil {
		logger(ctx).Warn("re-reading pod", "pod", id, "err", err)
		return
	}
	// Apps first: their stop events come before their pod's.
	for _, a := range apps {
		if s.idx.updateApp(a) && a.State == pod.AppExited {
			s.nri.containerExited(a.ID)
		}
	}
	s.idx.updatePod(p)
}

func (s *Server) forgetPod(id string) {
	s.watch.removePod(id)
	for _, c := range s.idx.removePod(id) {
		s.watch.remove(c)
		s.stats.forget(c)
	}
	s.stats.forget(podStatsKey(id))
}

// resyncLoop re-reads the pods that have live apps: exits are seen at once
// through inotify, but a supervisor that died writes no exit file.
func (s *Server) resyncLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopResync:
			return
		case <-t.C:
			for _, id := range s.idx.live() {
				s.refreshPod(context.Background(), id)
			}
		}
	}
}

// flyHandlers applies opts.AllowFly to the handlers: fly pods share the
// host's network, PID and IPC namespaces, so they are served only on
// request, and with a warning.
func flyHandlers(opts *Options) error {
	if !opts.AllowFly {
		if opts.DefaultFlavor == pod.FlavorFly {
			return errdefs.InvalidArgument("stage1.default_flavor is fly, which the CRI serves only with cri.fly.enable = true")
		}
		for h, f := range opts.RuntimeHandlers {
			if f == pod.FlavorFly {
				return errdefs.InvalidArgument("runtime handler %q is of flavor fly, which the CRI serves only with cri.fly.enable = true", h)
			}
		}
		return nil
	}
	if _, ok := opts.RuntimeHandlers[pod.FlavorFly]; !ok {
		opts.RuntimeHandlers = maps.Clone(opts.RuntimeHandlers)
		opts.RuntimeHandlers[pod.FlavorFly] = pod.FlavorFly
	}
	var fly []string
	for _, h := range slices.Sorted(maps.Keys(opts.RuntimeHandlers)) {
		if opts.RuntimeHandlers[h] == pod.FlavorFly {
			fly = append(fly, h)
		}
	}
	if opts.DefaultFlavor == pod.FlavorFly {
		fly = append(fly, `"" (the default)`)
	}
	opts.Logger.Warn("the fly flavor is enabled (cri.fly.enable): pods of these runtime handlers share the host's network, PID and IPC namespaces and can see and signal every host process; allow only trusted workloads to use them",
		"handlers", fly)
	return nil
}

// flavor maps a runtime handler to a stage1 flavor.
func (s *Server) flavor(handler string) (string, error) {
	if handler == "" {
		return s.opts.DefaultFlavor, nil
	}
	if f, ok := s.opts.RuntimeHandlers[handler]; ok {
		return f, nil
	}
	return "", errdefs.InvalidArgument("unknown runtime handler %q (configured: %v)", handler, slices.Sorted(maps.Keys(s.opts.RuntimeHandlers)))
}

// Version reports runclet and the CRI version it speaks.
func (s *Server) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version: "0.1.0", RuntimeName: "runclet", RuntimeVersion: runtimeVersion(s.opts.Version), RuntimeApiVersion: "v1",
	}, nil
}

// Status reports the runtime and network conditions and the handlers.
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	netCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := s.rt.NetworkReady(); err != nil {
		netCond.Status, netCond.Reason, netCond.Message = false, "NetworkPluginNotReady", err.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true}, netCond,
		}},
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	features := func(flavor string) *runtimeapi.RuntimeHandlerFeatures {
		return &runtimeapi.RuntimeHandlerFeatures{
			RecursiveReadOnlyMounts: s.features.RecursiveReadOnlyMounts,
			// fly pods have the host's namespaces, so no user namespace.
			UserNamespaces: s.features.UserNamespaces && flavor == pod.FlavorRunc,
		}
	}
	resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{Name: "", Features: features(s.opts.DefaultFlavor)})
	for _, h := range slices.Sorted(maps.Keys(s.opts.RuntimeHandlers)) {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{Name: h, Features: features(s.opts.RuntimeHandlers[h])})
	}
	if req.GetVerbose() {
		info := map[string]any{
			"config": s.opts.Info, "defaultFlavor": s.opts.DefaultFlavor, "runtimeHandlers": s.opts.RuntimeHandlers,
			"streamURL": s.streamURL, "features": s.features,
		}
		resp.Info = map[string]string{}
		for k, v := range info {
			b, _ := json.Marshal(v)
			resp.Info[k] = string(b)
		}
	}
	return resp, nil
}

// RuntimeConfig reports the cgroup driver, which kubelet must match.
func (s *Server) RuntimeConfig(context.Context, *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	driver := runtimeapi.CgroupDriver_CGROUPFS
	if s.opts.CgroupDriver == "systemd" {
		driver = runtimeapi.CgroupDriver_SYSTEMD
	}
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: driver}}, nil
}

// UpdateRuntimeConfig accepts kubelet's pod CIDR and only logs it: the
// network comes from the CNI config (or the built-in bridge's subnet).
func (s *Server) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	if cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr(); cidr != "" {
		logger(ctx).Info("kubelet's pod CIDR noted; runclet takes pod addresses from the CNI config, not from it", "podCIDR", cidr)
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
