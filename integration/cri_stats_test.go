package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/hostcgroup"
)

// eventLog collects a GetContainerEvents stream in the background.
type eventLog struct {
	ch     chan *runtimeapi.ContainerEventResponse
	err    chan error
	seen   []*runtimeapi.ContainerEventResponse
	cancel context.CancelFunc
}

func (ci *criInstance) subscribeEvents() *eventLog {
	ci.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := ci.rt.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		ci.t.Fatal(err)
	}
	l := &eventLog{ch: make(chan *runtimeapi.ContainerEventResponse, 4096), err: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			ev, err := s.Recv()
			if err != nil {
				l.err <- err
				return
			}
			l.ch <- ev
		}
	}()
	ci.t.Cleanup(cancel)
	return l
}

// wait returns the first event not seen yet of type kind for id, failing
// after 20 s.
func (l *eventLog) wait(t *testing.T, kind runtimeapi.ContainerEventType, id string) *runtimeapi.ContainerEventResponse {
	t.Helper()
	for i, ev := range l.seen {
		if ev.ContainerEventType == kind && ev.ContainerId == id {
			l.seen = append(l.seen[:i:i], l.seen[i+1:]...)
			return ev
		}
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-l.ch:
			if ev.ContainerEventType == kind && ev.ContainerId == id {
				return ev
			}
			l.seen = append(l.seen, ev)
		case err := <-l.err:
			t.Fatalf("event stream ended waiting for %s of %s: %v", kind, id, err)
		case <-deadline:
			t.Fatalf("no %s event for %s", kind, id)
		}
	}
}

// drain moves the events that arrive until the stream has been quiet for
// quiet into seen.
func (l *eventLog) drain(quiet time.Duration) {
	for {
		select {
		case ev := <-l.ch:
			l.seen = append(l.seen, ev)
		case <-time.After(quiet):
			return
		}
	}
}

// appCgroupFile is a file of an app's cgroup (runclet's own cgroup
// parent, either driver): v1 under the controller's hierarchy, else the
// unified tree.
func appCgroupFile(podID, ctrID, controller, v1name, v2name string) string {
	dir, v2 := hostcgroup.Dir(controller, appCgroup("", podID, ctrID))
	if v2 {
		return filepath.Join(dir, v2name)
	}
	return filepath.Join(dir, v1name)
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestCRIStatsUpdateAndEvents(t *testing.T) {
	ci := newCRIInstance(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	ctx := ctxT(t)
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	events := ci.subscribeEvents()

	sbCfg := ci.sandboxConfig("stats")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	events.wait(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, podID)
	if ev := events.wait(t, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, podID); ev.PodSandboxStatus.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod started event: %v", ev)
	}
	create := func(cc *runtimeapi.ContainerConfig) string {
		t.Helper()
		r, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sbCfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: r.ContainerId}); err != nil {
			t.Fatal(err)
		}
		return r.ContainerId
	}
	sleeperCfg := containerConfig("sleeper", ref, map[string]string{"role": "sleeper"}, "sleep", "1000")
	sleeperCfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 1024}}
	sleeper := create(sleeperCfg)
	busy := create(containerConfig("busy", ref, map[string]string{"role": "busy"}, "sh", "-c", "while :; do :; done"))
	for _, id := range []string{sleeper, busy} {
		ev := events.wait(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, id)
		if ev.PodSandboxStatus.Id != podID {
			t.Fatalf("created event: %v", ev)
		}
		ev = events.wait(t, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, id)
		var st *runtimeapi.ContainerStatus
		for _, s := range ev.ContainersStatuses {
			if s.Id == id {
				st = s
			}
		}
		if st == nil || st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt == 0 {
			t.Fatalf("started event of %s: %v", id, ev.ContainersStatuses)
		}
	}
	// 4 MiB in the sleeper's writable layer before stats first walk it.
	if r, err := ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"dd", "if=/dev/zero", "of=/big", "bs=1024", "count=4096"}, Timeout: 20}); err != nil || r.ExitCode != 0 {
		t.Fatalf("dd: %v %v", r, err)
	}

	// Container stats: plausible numbers for a sleeping process.
	t0 := time.Now()
	cs, err := ci.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: sleeper})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ContainerStats: %v", time.Since(t0).Round(time.Microsecond))
	st := cs.Stats
	if st.Memory == nil || st.Memory.WorkingSetBytes.GetValue() == 0 || st.Memory.UsageBytes.GetValue() == 0 ||
		st.Memory.AvailableBytes == nil || st.Memory.AvailableBytes.Value > 64<<20 {
		t.Fatalf("sleeper memory: %v", st.Memory)
	}
	if st.Cpu == nil || st.Cpu.UsageCoreNanoSeconds.GetValue() == 0 || st.Cpu.UsageNanoCores != nil {
		t.Fatalf("sleeper cpu (no rate on the first call): %v", st.Cpu)
	}
	if w := st.WritableLayer; w == nil || w.UsedBytes.GetValue() < 4<<20 || w.InodesUsed.GetValue() < 1 || !strings.HasPrefix(w.FsId.GetMountpoint(), ci.root) {
		t.Fatalf("sleeper writable layer: %v", w)
	}
	t.Logf("sleeper: working set %d, usage %d, rss %d, cpu %d ns, layer %d bytes / %d inodes", st.Memory.WorkingSetBytes.Value,
		st.Memory.UsageBytes.Value, st.Memory.RssBytes.GetValue(), st.Cpu.UsageCoreNanoSeconds.Value, st.WritableLayer.UsedBytes.Value, st.WritableLayer.InodesUsed.Value)

	// The busy loop's CPU time grows, and the second sample gives a rate.
	busyCPU := func() *runtimeapi.CpuUsage {
		t.Helper()
		r, err := ci.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{
			PodSandboxId: podID, LabelSelector: map[string]string{"role": "busy"}}})
		if err != nil || len(r.Stats) != 1 || r.Stats[0].Attributes.Id != busy {
			t.Fatalf("ListContainerStats by label: %v %v", r, err)
		}
		return r.Stats[0].Cpu
	}
	c1 := busyCPU()
	time.Sleep(1500 * time.Millisecond)
	t0 = time.Now()
	c2 := busyCPU()
	t.Logf("ListContainerStats (1 container): %v", time.Since(t0).Round(time.Microsecond))
	if c2.UsageCoreNanoSeconds.Value <= c1.UsageCoreNanoSeconds.Value || c2.UsageNanoCores == nil || c2.UsageNanoCores.Value < 1e8 {
		t.Fatalf("busy loop: %v then %v", c1, c2)
	}
	t.Logf("busy loop: %.2f cores", float64(c2.UsageNanoCores.Value)/1e9)
	all, err := ci.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil || len(all.Stats) != 2 {
		t.Fatalf("all container stats: %v %v", all, err)
	}

	// Pod stats: the pod's cgroup, its processes and its network. Some
	// traffic first: a connection attempt from the host to the pod's
	// address is answered with a reset.
	ps, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(ps.Status.Network.Ip, "9"), time.Second); err == nil {
		c.Close()
	}
	t0 = time.Now()
	pst, err := ci.rt.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PodSandboxStats: %v", time.Since(t0).Round(time.Microsecond))
	l := pst.Stats.Linux
	if l.Cpu.GetUsageCoreNanoSeconds().GetValue() < c2.UsageCoreNanoSeconds.Value || l.Memory.GetWorkingSetBytes().GetValue() == 0 ||
		l.Process.GetProcessCount().GetValue() < 2 || len(l.Containers) != 2 {
		t.Fatalf("pod stats: cpu %v memory %v process %v, %d containers", l.Cpu, l.Memory, l.Process, len(l.Containers))
	}
	n := l.Network
	if n == nil || n.DefaultInterface.GetName() != "eth0" || n.DefaultInterface.RxBytes.GetValue() == 0 || n.DefaultInterface.TxBytes.GetValue() == 0 {
		t.Fatalf("pod network: %v", n)
	}
	t.Logf("pod: cpu %d ns, working set %d, %d tasks, eth0 rx %d tx %d", l.Cpu.UsageCoreNanoSeconds.Value, l.Memory.WorkingSetBytes.Value,
		l.Process.ProcessCount.Value, n.DefaultInterface.RxBytes.Value, n.DefaultInterface.TxBytes.Value)
	lp, err := ci.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "stats"}}})
	if err != nil || len(lp.Stats) != 1 || lp.Stats[0].Attributes.Id != podID {
		t.Fatalf("ListPodSandboxStats: %v %v", lp, err)
	}
	if lp, _ := ci.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: "ffffffff"}}); len(lp.Stats) != 0 {
		t.Fatalf("ListPodSandboxStats of nothing: %v", lp)
	}

	// Update: a lower memory limit and a CPU quota reach the cgroup, the
	// bundle and ContainerStatus.
	memFile := appCgroupFile(podID, sleeper, "memory", "memory.limit_in_bytes", "memory.max")
	if got := readTrim(t, memFile); got != strconv.Itoa(64<<20) {
		t.Fatalf("%s before the update: %s", memFile, got)
	}
	t0 = time.Now()
	if _, err := ci.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: sleeper,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20, CpuQuota: 20000, CpuPeriod: 100000}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("UpdateContainerResources: %v", time.Since(t0).Round(time.Microsecond))
	if got := readTrim(t, memFile); got != strconv.Itoa(32<<20) {
		t.Fatalf("%s after the update: %s", memFile, got)
	}
	if quota := appCgroupFile(podID, sleeper, "cpu", "cpu.cfs_quota_us", "cpu.max"); !strings.HasPrefix(readTrim(t, quota), "20000") {
		t.Fatalf("%s: %s", quota, readTrim(t, quota))
	}
	var bundle struct {
		Linux struct {
			Resources struct {
				Memory struct {
					Limit int64 `json:"limit"`
				} `json:"memory"`
				CPU struct {
					Quota  int64  `json:"quota"`
					Shares uint64 `json:"shares"`
				} `json:"cpu"`
				Devices []json.RawMessage `json:"devices"`
			} `json:"resources"`
		} `json:"linux"`
	}
	data, err := os.ReadFile(filepath.Join(ci.root, "pods", podID, "apps", sleeper, "bundle", "config.json"))
	if err != nil || json.Unmarshal(data, &bundle) != nil {
		t.Fatalf("bundle: %v", err)
	}
	if r := bundle.Linux.Resources; r.Memory.Limit != 32<<20 || r.CPU.Quota != 20000 || r.CPU.Shares != 1024 || len(r.Devices) == 0 {
		t.Fatalf("bundle resources after the update: %+v", r)
	}
	if s := ci.containerStatus(ctx, sleeper); s.Resources.GetLinux().GetMemoryLimitInBytes() != 32<<20 || s.Resources.GetLinux().GetCpuQuota() != 20000 {
		t.Fatalf("ContainerStatus resources: %v", s.Resources)
	}
	cs, _ = ci.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: sleeper})
	if cs.Stats.Memory.AvailableBytes.GetValue() > 32<<20 {
		t.Fatalf("available bytes above the new limit: %v", cs.Stats.Memory)
	}

	// Exit, stop, removal: events with the final statuses.
	quick := create(containerConfig("quick", ref, nil, "sh", "-c", "exit 3"))
	events.wait(t, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, quick)
	events.wait(t, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, quick)
	ev := events.wait(t, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, quick)
	for _, s := range ev.ContainersStatuses {
		if s.Id == quick && (s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.ExitCode != 3) {
			t.Fatalf("stopped event: %v", s)
		}
	}
	if _, err := ci.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: quick}); err != nil {
		t.Fatal(err)
	}
	ev = events.wait(t, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, quick)
	if len(ev.ContainersStatuses) != 2 {
		t.Fatalf("deleted event: %d statuses", len(ev.ContainersStatuses))
	}
	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{sleeper, busy} {
		events.wait(t, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, id)
	}
	events.wait(t, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, podID)
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	events.wait(t, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, podID)
	// Removing the sandbox removed its two containers: one DELETED event
	// each. Any other event, or a second one, is a bug (kubelet's evented
	// PLEG acts on every event it gets).
	for _, id := range []string{sleeper, busy} {
		events.wait(t, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, id)
	}
	events.drain(time.Second)
	if len(events.seen) > 0 {
		var extra []string
		for _, e := range events.seen {
			extra = append(extra, fmt.Sprintf("%s:%s", e.ContainerEventType, e.ContainerId[:12]))
		}
		t.Errorf("unexpected events: %v", extra)
	}
	ci.stopDaemon()
	ci.checkNoMounts()
}
