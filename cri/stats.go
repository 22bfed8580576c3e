package cri

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
)

// Stats. Containers' cgroup numbers come from their pod's supervisor (one
// Stats call per pod, whatever the number of containers), pods' from
// their cgroup and network namespace (pod.Manager.PodStats), writable
// layers from a walk of the overlay upper dir, cached for
// writableLayerTTL. CPU usage_nano_cores is a rate the daemon computes
// from two cumulative samples (statsCache.cpuRate); the first call for a
// container has none.

const (
	// writableLayerTTL is how long a writable layer's walked size is
	// reused: kubelet asks every 10 to 15 s, a walk of a big layer is
	// costly, and the number is only used for eviction decisions.
	writableLayerTTL = 10 * time.Second
	// minRateWindow is the shortest time between the two samples a CPU
	// rate is computed from: two calls a few milliseconds apart (a List
	// and a single Stats) would give a meaningless rate, so the later one
	// reuses the last rate instead.
	minRateWindow = time.Second
	// statsParallel bounds the pods read at once.
	statsParallel = 8
)

// statsCache keeps what stats need across calls: the last CPU sample and
// rate per container (and per pod, podStatsKey) and writable layer sizes.
type statsCache struct {
	mu  sync.Mutex
	cpu map[string]*cpuRateState
	fs  map[string]fsEntry
	now func() time.Time
}

type cpuSample struct {
	at    time.Time
	usage uint64 // cumulative ns
}

type cpuRateState struct {
	prev cpuSample
	rate *uint64 // nano cores, nil until two samples far enough apart
}

type fsEntry struct {
	usage pod.FsUsage
	at    time.Time
}

func newStatsCache() *statsCache {
	return &statsCache{cpu: map[string]*cpuRateState{}, fs: map[string]fsEntry{}, now: time.Now}
}

func podStatsKey(podID string) string { return "pod/" + podID }

// cpuRate records sample s for key and returns the CPU rate in nano cores
// (1e9 = one core busy) over the window since the previous sample, or nil
// when there is no earlier sample. A window shorter than minRateWindow
// returns the last rate and keeps the older sample; a counter that went
// backwards (a new cgroup under the same name) starts over.
func (c *statsCache) cpuRate(key string, s cpuSample) *uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.cpu[key]
	if !ok {
		c.cpu[key] = &cpuRateState{prev: s}
		return nil
	}
	dt := s.at.Sub(st.prev.at)
	switch {
	case s.usage < st.prev.usage || dt < 0:
		c.cpu[key] = &cpuRateState{prev: s}
		return nil
	case dt < minRateWindow:
		return copyU64(st.rate)
	}
	rate := uint64(float64(s.usage-st.prev.usage) * float64(time.Second) / float64(dt))
	st.prev, st.rate = s, &rate
	return copyU64(st.rate)
}

func copyU64(p *uint64) *uint64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// writableLayer returns the cached usage for key, walking (outside the
// lock) when it is missing or older than writableLayerTTL.
func (c *statsCache) writableLayer(key string, walk func() (pod.FsUsage, error)) (pod.FsUsage, error) {
	c.mu.Lock()
	e, ok := c.fs[key]
	now := c.now()
	c.mu.Unlock()
	if ok && now.Sub(e.at) < writableLayerTTL {
		return e.usage, nil
	}
	u, err := walk()
	if err != nil {
		return u, err
	}
	c.mu.Lock()
	c.fs[key] = fsEntry{usage: u, at: now}
	c.mu.Unlock()
	return u, nil
}

// forget drops what is kept for a removed container or pod.
func (c *statsCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cpu, key)
	delete(c.fs, key)
}

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

func u64p(p *uint64) *runtimeapi.UInt64Value {
	if p == nil {
		return nil
	}
	return u64(*p)
}

// memoryUsage builds the CRI message; available is limit minus working
// set when there is a limit, as kubelet expects.
func memoryUsage(ts int64, usage, ws, rss, limit, faults, majFaults uint64) *runtimeapi.MemoryUsage {
	m := &runtimeapi.MemoryUsage{
		Timestamp: ts, WorkingSetBytes: u64(ws), UsageBytes: u64(usage), RssBytes: u64(rss),
		PageFaults: u64(faults), MajorPageFaults: u64(majFaults),
	}
	if limit > 0 {
		avail := uint64(0)
		if limit > ws {
			avail = limit - ws
		}
		m.AvailableBytes = u64(avail)
	}
	return m
}

// ContainerStats reads one container's stats.
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	if err := validateID("container ID", req.ContainerId); err != nil {
		return nil, err
	}
	c, err := s.idx.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.containerStats(ctx, []*containerEntry{c})[0]}, nil
}

// listContainerStats selects containers as ListContainers does (ID and
// sandbox ID prefixes, labels) and reads their stats.
func (s *Server) listContainerStats(ctx context.Context, f *runtimeapi.ContainerStatsFilter) []*runtimeapi.ContainerStats {
	var sel []*containerEntry
	for _, c := range s.idx.containers() {
		if f != nil {
			if f.Id != "" && !strings.HasPrefix(c.app.ID, f.Id) {
				continue
			}
			if f.PodSandboxId != "" && !strings.HasPrefix(c.app.PodID, f.PodSandboxId) {
				continue
			}
			if !matchLabels(c.app.Labels, f.LabelSelector) {
				continue
			}
		}
		sel = append(sel, c)
	}
	return s.containerStats(ctx, sel)
}

// ListContainerStats reads the stats of the containers the filter selects.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	return &runtimeapi.ListContainerStatsResponse{Stats: s.listContainerStats(ctx, req.GetFilter())}, nil
}

// StreamContainerStats is ListContainerStats in chunks.
func (s *Server) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	return sendChunks(s.listContainerStats(stream.Context(), req.GetFilter()), func(items []*runtimeapi.ContainerStats) error {
		return stream.Send(&runtimeapi.StreamContainerStatsResponse{ContainerStats: items})
	})
}

// live says whether an app has a cgroup worth reading.
func live(a *pod.App) bool { return a.State == pod.AppCreated || a.State == pod.AppRunning }

// containerStats reads the stats of ctrs, in their order: one supervisor
// call per pod (pods in parallel), writable layers from the cache. A pod
// whose supervisor does not answer costs its containers their CPU and
// memory numbers, not the whole call.
func (s *Server) containerStats(ctx context.Context, ctrs []*containerEntry) []*runtimeapi.ContainerStats {
	out, _ := s.readContainerStats(ctx, ctrs)
	return out
}

// readContainerStats is containerStats that also returns what the
// supervisors reported, by container ID (the pod metrics need the task
// count, which ContainerStats has no field for).
func (s *Server) readContainerStats(ctx context.Context, ctrs []*containerEntry) ([]*runtimeapi.ContainerStats, map[string]pod.AppStats) {
	byPod := map[string][]string{}
	var pods []string
	for _, c := range ctrs {
		if !live(c.app) {
			continue
		}
		if _, ok := byPod[c.app.PodID]; !ok {
			pods = append(pods, c.app.PodID)
		}
		byPod[c.app.PodID] = append(byPod[c.app.PodID], c.app.ID)
	}
	var mu sync.Mutex
	got := map[string]pod.AppStats{}
	parallel(len(pods), func(i int) {
		st, err := s.src.AppStats(ctx, pods[i], byPod[pods[i]])
		if err != nil {
			logger(ctx).Debug("container stats: pod supervisor", "pod", pods[i], "err", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, a := range st {
			if a.Error == "" {
				got[a.Name] = a
			} else {
				logger(ctx).Debug("container stats", "container", a.Name, "err", a.Error)
			}
		}
	})
	out := make([]*runtimeapi.ContainerStats, len(ctrs))
	parallel(len(ctrs), func(i int) {
		c := ctrs[i]
		a := c.app
		cs := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
			Id: a.ID, Metadata: &runtimeapi.ContainerMetadata{Name: a.Name, Attempt: a.Attempt},
			Labels: copyMap(a.Labels), Annotations: copyMap(a.Annotations),
		}}
		if st, ok := got[a.ID]; ok {
			ts := st.Timestamp.UnixNano()
			cs.Cpu = &runtimeapi.CpuUsage{
				Timestamp: ts, UsageCoreNanoSeconds: u64(st.CPUUsageNanos),
				UsageNanoCores: u64p(s.stats.cpuRate(a.ID, cpuSample{at: st.Timestamp, usage: st.CPUUsageNanos})),
			}
			cs.Memory = memoryUsage(ts, st.MemoryUsage, st.MemoryWorkingSet, st.MemoryRSS, st.MemoryLimit, st.PageFaults, st.MajorPageFaults)
			cs.Swap = &runtimeapi.SwapUsage{Timestamp: ts, SwapUsageBytes: u64(st.SwapUsage)}
			if st.SwapLimit > 0 {
				cs.Swap.SwapAvailableBytes = u64(st.SwapLimit - min(st.SwapLimit, st.SwapUsage))
			}
		}
		u, err := s.stats.writableLayer(a.ID, func() (pod.FsUsage, error) { return s.src.WritableLayerUsage(a.PodID, a.ID) })
		if err == nil {
			cs.WritableLayer = &runtimeapi.FilesystemUsage{
				Timestamp: u.Timestamp.UnixNano(), FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: u.Mountpoint},
				UsedBytes: u64(u.Bytes), InodesUsed: u64(u.Inodes),
			}
		} else if !errdefs.IsNotFound(err) {
			logger(ctx).Debug("container stats: writable layer", "container", a.ID, "err", err)
		}
		out[i] = cs
	})
	return out, got
}

// parallel runs fn(0..n-1) on at most statsParallel goroutines.
func parallel(n int, fn func(int)) {
	if n == 1 {
		fn(0)
		return
	}
	sem := make(chan struct{}, statsParallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// PodSandboxStats reads one pod's stats with its containers'.
func (s *Server) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, ctrs, err := s.idx.sandbox(req.PodSandboxId)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.podStats(ctx, sandboxView{pod: p, containers: ctrs})}, nil
}

// listPodSandboxStats selects ready pods by ID prefix and labels.
func (s *Server) listPodSandboxStats(ctx context.Context, f *runtimeapi.PodSandboxStatsFilter) []*runtimeapi.PodSandboxStats {
	var sel []sandboxView
	for _, v := range s.idx.sandboxes() {
		if sandboxState(v.pod, v.containers) != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		if f != nil {
			if f.Id != "" && !strings.HasPrefix(v.pod.ID, f.Id) {
				continue
			}
			if !matchLabels(v.pod.Labels, f.LabelSelector) {
				continue
			}
		}
		sel = append(sel, v)
	}
	out := make([]*runtimeapi.PodSandboxStats, len(sel))
	parallel(len(sel), func(i int) { out[i] = s.podStats(ctx, sel[i]) })
	return out
}

// ListPodSandboxStats reads the stats of the ready pods the filter selects.
func (s *Server) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: s.listPodSandboxStats(ctx, req.GetFilter())}, nil
}

// StreamPodSandboxStats is ListPodSandboxStats in chunks.
func (s *Server) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	return sendChunks(s.listPodSandboxStats(stream.Context(), req.GetFilter()), func(items []*runtimeapi.PodSandboxStats) error {
		return stream.Send(&runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: items})
	})
}

// podStats reads a pod's cgroup, network and containers. A pod that is
// not ready has only its attributes and containers (its cgroup and
// network are gone or going).
func (s *Server) podStats(ctx context.Context, v sandboxView) *runtimeapi.PodSandboxStats {
	out, _ := s.readPodStats(ctx, v)
	return out
}

// readPodStats is podStats that also returns what the supervisor
// reported of the containers, by container ID.
func (s *Server) readPodStats(ctx context.Context, v sandboxView) (*runtimeapi.PodSandboxStats, map[string]pod.AppStats) {
	p := v.pod
	ctrs, raw := s.readContainerStats(ctx, v.containers)
	out := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id: p.ID, Metadata: sandboxMetadata(p), Labels: copyMap(p.Labels), Annotations: copyMap(p.Annotations),
		},
		Linux: &runtimeapi.LinuxPodSandboxStats{Containers: ctrs},
	}
	if sandboxState(p, v.containers) != runtimeapi.PodSandboxState_SANDBOX_READY {
		return out, raw
	}
	ps, err := s.src.PodStats(ctx, p)
	if err != nil {
		logger(ctx).Debug("pod sandbox stats", "pod", p.ID, "err", err)
		return out, raw
	}
	l := out.Linux
	ts := ps.Timestamp.UnixNano()
	if c := ps.CPU; c != nil {
		l.Cpu = &runtimeapi.CpuUsage{
			Timestamp: ts, UsageCoreNanoSeconds: u64(c.UsageNanos),
			UsageNanoCores: u64p(s.stats.cpuRate(podStatsKey(p.ID), cpuSample{at: ps.Timestamp, usage: c.UsageNanos})),
		}
	}
	if m := ps.Memory; m != nil {
		l.Memory = memoryUsage(ts, m.Usage, m.WorkingSet, m.RSS, m.Limit, m.PageFaults, m.MajorFaults)
	}
	if ps.Processes != nil {
		l.Process = &runtimeapi.ProcessUsage{Timestamp: ts, ProcessCount: u64(*ps.Processes)}
	}
	if n := ps.Network; n != nil {
		l.Network = &runtimeapi.NetworkUsage{Timestamp: ts}
		for _, i := range n.Interfaces {
			iu := &runtimeapi.NetworkInterfaceUsage{Name: i.Name, RxBytes: u64(i.RxBytes), RxErrors: u64(i.RxErrors), TxBytes: u64(i.TxBytes), TxErrors: u64(i.TxErrors)}
			l.Network.Interfaces = append(l.Network.Interfaces, iu)
			if i.Name == n.DefaultInterface {
				l.Network.DefaultInterface = iu
			}
		}
	}
	return out, raw
}
