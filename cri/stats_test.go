package cri

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
)

func TestCPURateFromTwoSamples(t *testing.T) {
	c := newStatsCache()
	t0 := time.Unix(1000, 0)
	if r := c.cpuRate("a", cpuSample{at: t0, usage: 5e9}); r != nil {
		t.Fatalf("first sample has a rate: %d", *r)
	}
	// 1 s of CPU over 2 s: half a core.
	r := c.cpuRate("a", cpuSample{at: t0.Add(2 * time.Second), usage: 6e9})
	if r == nil || *r != 5e8 {
		t.Fatalf("rate %v, want 5e8", r)
	}
	// A sample 10 ms later is no window: the last rate, the older sample kept.
	if r := c.cpuRate("a", cpuSample{at: t0.Add(2*time.Second + 10*time.Millisecond), usage: 6e9 + 1e7}); r == nil || *r != 5e8 {
		t.Fatalf("short window: %v, want the last rate", r)
	}
	// Two busy cores over 1.5 s since the kept sample.
	if r := c.cpuRate("a", cpuSample{at: t0.Add(3500 * time.Millisecond), usage: 9e9}); r == nil || *r != 2e9 {
		t.Fatalf("rate %v, want 2e9", r)
	}
	// A counter that went backwards is a new cgroup: start over.
	if r := c.cpuRate("a", cpuSample{at: t0.Add(5 * time.Second), usage: 1e6}); r != nil {
		t.Fatalf("after a reset: %d", *r)
	}
	if r := c.cpuRate("b", cpuSample{at: t0, usage: 1}); r != nil {
		t.Fatal("keys share samples")
	}
	c.forget("a")
	if r := c.cpuRate("a", cpuSample{at: t0.Add(9 * time.Second), usage: 2e6}); r != nil {
		t.Fatal("a forgotten container kept its sample")
	}
}

func TestWritableLayerIsCached(t *testing.T) {
	c := newStatsCache()
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	walks := 0
	walk := func() (pod.FsUsage, error) {
		walks++
		return pod.FsUsage{Bytes: uint64(walks) * 4096, Inodes: 3}, nil
	}
	for range 3 {
		if u, _ := c.writableLayer("a", walk); u.Bytes != 4096 {
			t.Fatalf("cached usage %d", u.Bytes)
		}
	}
	now = now.Add(writableLayerTTL + time.Second)
	if u, _ := c.writableLayer("a", walk); u.Bytes != 8192 || walks != 2 {
		t.Fatalf("after the TTL: %d bytes, %d walks", u.Bytes, walks)
	}
	failing := func() (pod.FsUsage, error) { return pod.FsUsage{}, errdefs.NotFound("gone") }
	if _, err := c.writableLayer("b", failing); !errdefs.IsNotFound(err) {
		t.Fatalf("error: %v", err)
	}
}

// statsFixture: pod "web" with a running and an exited container, pod
// "db" with a running one, all real; the numbers come from a stubStats
// (ts.src).
func statsFixture(t *testing.T) (ts *testServer, web, db, run1, done1, run2 string) {
	f := newStubStats()
	ts = startServer(t, newSpy(t), func(o *Options) { o.Stats = f })
	ts.src = f
	ctx := context.Background()
	web = ts.runPod(t, realSandboxConfig(t, "web"))
	db = ts.runPod(t, realSandboxConfig(t, "db"))
	run1 = ts.createCtr(t, web, sleeperConfig("run1"))
	done1 = ts.createCtr(t, web, sleeperConfig("done1"))
	run2 = ts.createCtr(t, db, sleeperConfig("run2"))
	for _, id := range []string{run1, done1, run2} {
		if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		f.fsUsage[id] = pod.FsUsage{Timestamp: time.Unix(5, 0), Mountpoint: "/var/lib/runclet/pods", Bytes: 8192, Inodes: 2}
	}
	if _, err := ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: done1}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(2000, 0)
	f.setStats(run1, pod.AppStats{Timestamp: t0, CPUUsageNanos: 1e9, MemoryUsage: 10 << 20, MemoryWorkingSet: 8 << 20, MemoryRSS: 6 << 20,
		MemoryLimit: 64 << 20, PageFaults: 100, MajorPageFaults: 2, SwapUsage: 1 << 20, SwapLimit: 4 << 20, Pids: 3})
	f.setStats(run2, pod.AppStats{Timestamp: t0, CPUUsageNanos: 3e9, MemoryUsage: 1 << 20, MemoryWorkingSet: 1 << 20})
	return ts, web, db, run1, done1, run2
}

func statsIDs(st []*runtimeapi.ContainerStats) []string {
	var ids []string
	for _, s := range st {
		ids = append(ids, s.Attributes.Id)
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

func TestContainerStats(t *testing.T) {
	ts, web, db, run1, done1, run2 := statsFixture(t)
	f := ts.src
	ctx := context.Background()

	r, err := ts.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: run1[:12]})
	if err != nil {
		t.Fatal(err)
	}
	st := r.Stats
	if st.Attributes.Id != run1 || st.Attributes.Metadata.Name != "run1" || st.Attributes.Labels["c"] != "run1" {
		t.Fatalf("attributes: %v", st.Attributes)
	}
	ts0 := time.Unix(2000, 0).UnixNano()
	if st.Cpu.Timestamp != ts0 || st.Cpu.UsageCoreNanoSeconds.Value != 1e9 || st.Cpu.UsageNanoCores != nil {
		t.Fatalf("cpu (no rate on the first call): %v", st.Cpu)
	}
	m := st.Memory
	if m.UsageBytes.Value != 10<<20 || m.WorkingSetBytes.Value != 8<<20 || m.RssBytes.Value != 6<<20 ||
		m.AvailableBytes.Value != 56<<20 || m.PageFaults.Value != 100 || m.MajorPageFaults.Value != 2 {
		t.Fatalf("memory: %v", m)
	}
	if st.Swap.SwapUsageBytes.Value != 1<<20 || st.Swap.SwapAvailableBytes.Value != 3<<20 {
		t.Fatalf("swap: %v", st.Swap)
	}
	if w := st.WritableLayer; w.UsedBytes.Value != 8192 || w.InodesUsed.Value != 2 || w.FsId.Mountpoint != "/var/lib/runclet/pods" {
		t.Fatalf("writable layer: %v", w)
	}

	// The rate comes with the next sample, from the two samples' times.
	f.setStats(run1, pod.AppStats{Timestamp: time.Unix(2010, 0), CPUUsageNanos: 6e9, MemoryUsage: 10 << 20})
	r, _ = ts.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: run1})
	if c := r.Stats.Cpu; c.UsageNanoCores == nil || c.UsageNanoCores.Value != 5e8 {
		t.Fatalf("rate: %v, want half a core", c)
	}
	if r.Stats.Memory.AvailableBytes != nil {
		t.Fatal("available bytes without a limit")
	}

	// Lists: one supervisor call per pod with only its live containers;
	// the exited container has its writable layer and no cgroup numbers.
	f.mu.Lock()
	f.statsCalls = nil
	f.mu.Unlock()
	all, err := ts.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := statsIDs(all.Stats); fmt.Sprint(got) != fmt.Sprint(sorted(run1, done1, run2)) {
		t.Fatalf("all: %v", got)
	}
	f.mu.Lock()
	calls := slices.Sorted(slices.Values(f.statsCalls))
	f.mu.Unlock()
	if fmt.Sprint(calls) != fmt.Sprint(sorted(web+":"+run1, db+":"+run2)) {
		t.Fatalf("supervisor calls: %v", calls)
	}
	for _, s := range all.Stats {
		if s.Attributes.Id == done1 && (s.Cpu != nil || s.Memory != nil || s.WritableLayer == nil) {
			t.Fatalf("exited container: %v", s)
		}
	}
	for name, c := range map[string]struct {
		f    *runtimeapi.ContainerStatsFilter
		want []string
	}{
		"id prefix":  {&runtimeapi.ContainerStatsFilter{Id: run2[:8]}, []string{run2}},
		"pod":        {&runtimeapi.ContainerStatsFilter{PodSandboxId: web}, sorted(run1, done1)},
		"pod prefix": {&runtimeapi.ContainerStatsFilter{PodSandboxId: db[:6]}, []string{run2}},
		"label":      {&runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"c": "done1"}}, []string{done1}},
		"pod+label":  {&runtimeapi.ContainerStatsFilter{PodSandboxId: db, LabelSelector: map[string]string{"c": "run1"}}, nil},
	} {
		r, err := ts.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: c.f})
		if err != nil {
			t.Fatal(err)
		}
		if got := statsIDs(r.Stats); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
	stream, err := ts.rt.StreamContainerStats(ctx, &runtimeapi.StreamContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: web}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil || fmt.Sprint(statsIDs(msg.ContainerStats)) != fmt.Sprint(sorted(run1, done1)) {
		t.Fatalf("stream: %v %v", msg, err)
	}

	// A pod whose supervisor does not answer costs only its containers'
	// numbers.
	f.mu.Lock()
	f.statsErr[db] = errdefs.Unavailable("supervisor gone")
	f.mu.Unlock()
	all, err = ts.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all.Stats {
		if s.Attributes.Id != done1 && (s.Attributes.Id == run2) != (s.Cpu == nil) {
			t.Fatalf("%s: cpu %v", s.Attributes.Id, s.Cpu)
		}
	}
	_, err = ts.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: "ffffffffffff"})
	wantCode(t, err, codes.NotFound)
	_, err = ts.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{})
	wantCode(t, err, codes.InvalidArgument)

	// The writable layer is walked once per TTL, not per call.
	if n := f.called("WritableLayerUsage"); n != 3 {
		t.Fatalf("writable layers walked %d times, want once per container", n)
	}
	// A removed container's samples go with it.
	ts.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: run1})
	ts.stats.mu.Lock()
	_, cpuKept := ts.stats.cpu[run1]
	_, fsKept := ts.stats.fs[run1]
	ts.stats.mu.Unlock()
	if cpuKept || fsKept {
		t.Fatal("stats cache keeps a removed container")
	}
}

func TestPodSandboxStats(t *testing.T) {
	ts, web, db, run1, done1, _ := statsFixture(t)
	f := ts.src
	ctx := context.Background()
	procs := uint64(4)
	f.mu.Lock()
	f.podStats[web] = &pod.PodStats{
		Timestamp: time.Unix(3000, 0),
		CPU:       &pod.CPUStats{UsageNanos: 7e9},
		Memory:    &pod.MemoryStats{Usage: 20 << 20, WorkingSet: 12 << 20, RSS: 9 << 20, Limit: 100 << 20, PageFaults: 7, MajorFaults: 1},
		Processes: &procs,
		Network: &pod.NetworkStats{DefaultInterface: "eth0", Interfaces: []pod.InterfaceStats{
			{Name: "eth0", RxBytes: 1000, RxErrors: 1, TxBytes: 2000, TxErrors: 2}, {Name: "net1", RxBytes: 5},
		}},
	}
	f.podStats[db] = &pod.PodStats{Timestamp: time.Unix(3000, 0)} // nothing readable
	f.mu.Unlock()

	r, err := ts.rt.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: web})
	if err != nil {
		t.Fatal(err)
	}
	st := r.Stats
	if st.Attributes.Id != web || st.Attributes.Metadata.Name != "web" || st.Attributes.Labels["app"] != "web" {
		t.Fatalf("attributes: %v", st.Attributes)
	}
	l := st.Linux
	if l.Cpu.UsageCoreNanoSeconds.Value != 7e9 || l.Cpu.UsageNanoCores != nil || l.Memory.WorkingSetBytes.Value != 12<<20 ||
		l.Memory.AvailableBytes.Value != 88<<20 || l.Process.ProcessCount.Value != 4 {
		t.Fatalf("cpu, memory, processes: %v", l)
	}
	n := l.Network
	if n.DefaultInterface.Name != "eth0" || n.DefaultInterface.RxBytes.Value != 1000 || n.DefaultInterface.TxErrors.Value != 2 || len(n.Interfaces) != 2 {
		t.Fatalf("network: %v", n)
	}
	if got := statsIDs(l.Containers); fmt.Sprint(got) != fmt.Sprint(sorted(run1, done1)) {
		t.Fatalf("containers: %v", got)
	}
	f.mu.Lock()
	f.podStats[web].CPU = &pod.CPUStats{UsageNanos: 9e9}
	f.podStats[web].Timestamp = time.Unix(3004, 0)
	f.mu.Unlock()
	r, _ = ts.rt.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: web})
	if c := r.Stats.Linux.Cpu; c.UsageNanoCores == nil || c.UsageNanoCores.Value != 5e8 {
		t.Fatalf("pod rate: %v", c)
	}

	list := func(f *runtimeapi.PodSandboxStatsFilter) []string {
		t.Helper()
		r, err := ts.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range r.Stats {
			ids = append(ids, s.Attributes.Id)
		}
		slices.Sort(ids)
		return ids
	}
	if got := list(nil); fmt.Sprint(got) != fmt.Sprint(sorted(web, db)) {
		t.Fatalf("all pods: %v", got)
	}
	if got := list(&runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "db"}}); fmt.Sprint(got) != fmt.Sprint([]string{db}) {
		t.Fatalf("by label: %v", got)
	}
	if got := list(&runtimeapi.PodSandboxStatsFilter{Id: web[:8]}); fmt.Sprint(got) != fmt.Sprint([]string{web}) {
		t.Fatalf("by id prefix: %v", got)
	}
	// Stopped pods are not listed; asked for directly they have no
	// pod-level numbers.
	if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: db}); err != nil {
		t.Fatal(err)
	}
	if got := list(nil); fmt.Sprint(got) != fmt.Sprint([]string{web}) {
		t.Fatalf("after stopping db: %v", got)
	}
	r, err = ts.rt.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: db})
	if err != nil || r.Stats.Linux.Cpu != nil || len(r.Stats.Linux.Containers) != 1 {
		t.Fatalf("stopped pod: %v %v", r, err)
	}
	stream, err := ts.rt.StreamPodSandboxStats(ctx, &runtimeapi.StreamPodSandboxStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || len(msg.PodSandboxStats) != 1 {
		t.Fatalf("stream: %v %v", msg, err)
	}
	_, err = ts.rt.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: "ffffffff"})
	wantCode(t, err, codes.NotFound)
}

// stubStats is the stats source of the stats tests: exact numbers that
// a real cgroup cannot give, over pods and containers that are real.
type stubStats struct {
	mu         sync.Mutex
	calls      map[string]int
	appStats   map[string]pod.AppStats
	podStats   map[string]*pod.PodStats
	statsErr   map[string]error
	statsCalls []string
	fsUsage    map[string]pod.FsUsage
}

func newStubStats() *stubStats {
	return &stubStats{calls: map[string]int{}, appStats: map[string]pod.AppStats{}, podStats: map[string]*pod.PodStats{},
		statsErr: map[string]error{}, fsUsage: map[string]pod.FsUsage{}}
}

func (f *stubStats) called(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func (f *stubStats) setStats(appID string, st pod.AppStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st.Name = appID
	f.appStats[appID] = st
}

func (f *stubStats) PodStats(ctx context.Context, p *pod.Pod) (*pod.PodStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["PodStats"]++
	st, ok := f.podStats[p.ID]
	if !ok {
		return nil, errdefs.NotFound("no stats for pod %s", p.ID)
	}
	cp := *st
	return &cp, nil
}

func (f *stubStats) AppStats(ctx context.Context, podID string, appIDs []string) ([]pod.AppStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["AppStats"]++
	f.statsCalls = append(f.statsCalls, podID+":"+strings.Join(appIDs, ","))
	if err := f.statsErr[podID]; err != nil {
		return nil, err
	}
	var out []pod.AppStats
	for _, id := range appIDs {
		if st, ok := f.appStats[id]; ok {
			out = append(out, st)
		}
	}
	return out, nil
}

func (f *stubStats) WritableLayerUsage(podID, appID string) (pod.FsUsage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["WritableLayerUsage"]++
	u, ok := f.fsUsage[appID]
	if !ok {
		return pod.FsUsage{}, errdefs.NotFound("no layer for %s", appID)
	}
	return u, nil
}
