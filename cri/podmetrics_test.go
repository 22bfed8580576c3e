package cri

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// cadvisorNames are the container metrics kubelet's /metrics/cadvisor
// served (what critest v1.37 expects of ListMetricDescriptors).
var cadvisorNames = []string{
	"container_blkio_device_usage_total", "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
	"container_cpu_cfs_throttled_seconds_total", "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
	"container_cpu_user_seconds_total", "container_file_descriptors", "container_fs_inodes_free", "container_fs_inodes_total",
	"container_fs_limit_bytes", "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
	"container_fs_writes_bytes_total", "container_fs_writes_total", "container_hugetlb_max_usage_bytes",
	"container_hugetlb_usage_bytes", "container_last_seen", "container_memory_cache", "container_memory_failcnt",
	"container_memory_failures_total", "container_memory_kernel_usage", "container_memory_mapped_file",
	"container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap", "container_memory_usage_bytes",
	"container_memory_working_set_bytes", "container_network_receive_bytes_total", "container_network_receive_errors_total",
	"container_network_receive_packets_dropped_total", "container_network_receive_packets_total",
	"container_network_transmit_bytes_total", "container_network_transmit_errors_total",
	"container_network_transmit_packets_dropped_total", "container_network_transmit_packets_total",
	"container_oom_events_total", "container_pressure_cpu_stalled_seconds_total", "container_pressure_cpu_waiting_seconds_total",
	"container_pressure_io_stalled_seconds_total", "container_pressure_io_waiting_seconds_total",
	"container_pressure_memory_stalled_seconds_total", "container_pressure_memory_waiting_seconds_total",
	"container_processes", "container_sockets", "container_spec_cpu_period", "container_spec_cpu_quota",
	"container_spec_cpu_shares", "container_spec_memory_limit_bytes", "container_spec_memory_reservation_limit_bytes",
	"container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads", "container_threads_max",
	"container_ulimits_soft",
}

// series is one metric keyed by its name and extra label values.
func seriesKey(m *runtimeapi.Metric, nBase int) string {
	return strings.Join(append([]string{m.Name}, m.LabelValues[nBase:]...), "|")
}

func TestPodSandboxMetrics(t *testing.T) {
	ts, web, db, run1, done1, run2 := statsFixture(t)
	f := ts.src
	ctx := context.Background()
	f.mu.Lock()
	f.podStats[web] = &pod.PodStats{
		Timestamp: time.Unix(3000, 0),
		Network: &pod.NetworkStats{DefaultInterface: "eth0", Interfaces: []pod.InterfaceStats{
			{Name: "eth0", RxBytes: 1000, RxPackets: 10, RxErrors: 1, RxDropped: 3, TxBytes: 2000, TxPackets: 20, TxErrors: 2, TxDropped: 4},
			{Name: "net1", RxBytes: 5},
		}},
	}
	f.podStats[db] = &pod.PodStats{Timestamp: time.Unix(3000, 0)} // host network: no interfaces
	f.fsUsage[run1] = pod.FsUsage{Timestamp: time.Unix(5, 0), Mountpoint: "/var/lib/runclet/pods", Bytes: 8192, Inodes: 2,
		Device: "/dev/vda1", Capacity: 10 << 30, InodesTotal: 1000, InodesFree: 600}
	f.mu.Unlock()
	t0 := time.Unix(2000, 0)
	f.setStats(run1, pod.AppStats{Timestamp: t0, CPUUsageNanos: 2_500_000_000, MemoryUsage: 10 << 20, MemoryWorkingSet: 8 << 20,
		MemoryRSS: 6 << 20, MemoryLimit: 64 << 20, PageFaults: 100, MajorPageFaults: 2, SwapUsage: 1 << 20, SwapLimit: 4 << 20, Pids: 3,
		CPU:     &proto.AppCPUStats{UserNanos: 1_900_000_000, SystemNanos: 600_000_000, Periods: 40, ThrottledPeriods: 4, ThrottledNanos: 3_100_000_000},
		Memory:  &proto.AppMemoryStats{Cache: 3 << 20, MappedFile: 1 << 20, Kernel: 512 << 10, MaxUsage: 12 << 20, Failcnt: 7, OOMKills: 1},
		Process: &proto.AppProcessStats{Processes: 2, Threads: 3, ThreadsMax: 100, FileDescriptors: 9, Sockets: 2, OpenFilesSoftLimit: 1024},
		Blkio: []proto.BlkioDevice{{Major: 4093, Minor: 4093,
			Bytes: map[string]uint64{"Read": 4096, "Write": 8192}, Ops: map[string]uint64{"Read": 1, "Write": 2}}},
		Hugetlb:  []proto.HugetlbUsage{{PageSize: "2MB", Usage: 2 << 20, MaxUsage: 4 << 20}},
		Pressure: &proto.PressureStats{CPU: &proto.PressureTotals{SomeMicros: 5e6, FullMicros: 2e6}},
	})
	// The spec's limits, as UpdateContainerResources leaves them in the index.
	if _, err := ts.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: run1,
		Linux: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 20000, CpuShares: 512,
			MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 96 << 20}}); err != nil {
		t.Fatal(err)
	}
	// A stopped pod is not listed.
	stopped := ts.runPod(t, realSandboxConfig(t, "stopped"))
	if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}

	dr, err := ts.rt.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	descs := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range dr.Descriptors {
		if descs[d.Name] != nil || d.Help == "" || len(d.LabelKeys) < len(baseLabelKeys) || !slices.Equal(d.LabelKeys[:5], baseLabelKeys) {
			t.Fatalf("descriptor %v: duplicate, no help, or not the base label keys first", d)
		}
		descs[d.Name] = d
	}
	for _, name := range cadvisorNames {
		if descs[name] == nil {
			t.Errorf("no descriptor %s", name)
		}
	}
	for name, extra := range map[string]string{
		"container_cpu_usage_seconds_total": "cpu", "container_memory_failures_total": "failure_type scope",
		"container_fs_usage_bytes": "device", "container_blkio_device_usage_total": "device major minor operation",
		"container_network_receive_bytes_total": "interface", "container_hugetlb_usage_bytes": "pagesize",
		"container_ulimits_soft": "ulimit", "container_threads": "",
	} {
		if got := strings.Join(descs[name].LabelKeys[5:], " "); got != extra {
			t.Errorf("%s: extra label keys %q, want %q", name, got, extra)
		}
	}

	r, err := ts.rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pods []string
	got := map[string]map[string]*runtimeapi.Metric{} // container ID or pod ID -> series -> metric
	for _, pm := range r.PodMetrics {
		pods = append(pods, pm.PodSandboxId)
		check := func(key string, m *runtimeapi.Metric) {
			t.Helper()
			d := descs[m.Name]
			if d == nil {
				t.Fatalf("metric %s has no descriptor", m.Name)
			}
			if len(m.LabelValues) != len(d.LabelKeys) || m.Value == nil || m.Timestamp == 0 {
				t.Fatalf("metric %v does not fit its descriptor %v", m, d)
			}
			if d.LabelKeys[0] != "container" || d.LabelKeys[1] != "id" {
				t.Fatalf("label keys %v", d.LabelKeys)
			}
			if got[key] == nil {
				got[key] = map[string]*runtimeapi.Metric{}
			}
			k := seriesKey(m, len(baseLabelKeys))
			if got[key][k] != nil {
				t.Fatalf("%s: series %s twice", key, k)
			}
			got[key][k] = m
		}
		for _, m := range pm.Metrics {
			if m.LabelValues[0] != "" || m.LabelValues[1] != pm.PodSandboxId {
				t.Errorf("pod metric labels %v", m.LabelValues)
			}
			check(pm.PodSandboxId, m)
		}
		for _, cm := range pm.ContainerMetrics {
			if _, ok := got[cm.ContainerId]; !ok {
				got[cm.ContainerId] = map[string]*runtimeapi.Metric{}
			}
			for _, m := range cm.Metrics {
				check(cm.ContainerId, m)
			}
		}
	}
	if fmt.Sprint(sorted(pods...)) != fmt.Sprint(sorted(web, db)) {
		t.Fatalf("pods %v, want the two ready ones", pods)
	}
	for _, id := range []string{run1, done1, run2} {
		if _, ok := got[id]; !ok {
			t.Errorf("container %s missing", id)
		}
	}

	// Values: whole seconds where cadvisor has seconds; the supervisor's
	// reading, the layer's walk and statfs, the spec.
	ts0, layerTS := t0.UnixNano(), time.Unix(5, 0).UnixNano()
	want := map[string]uint64{
		"container_last_seen": 2000, "container_cpu_usage_seconds_total|total": 2, "container_cpu_usage_nanoseconds_total": 2_500_000_000,
		"container_cpu_user_seconds_total": 1, "container_cpu_system_seconds_total": 0,
		"container_cpu_cfs_periods_total": 40, "container_cpu_cfs_throttled_periods_total": 4, "container_cpu_cfs_throttled_seconds_total": 3,
		"container_memory_usage_bytes": 10 << 20, "container_memory_working_set_bytes": 8 << 20, "container_memory_rss": 6 << 20,
		"container_memory_swap": 1 << 20, "container_memory_cache": 3 << 20, "container_memory_mapped_file": 1 << 20,
		"container_memory_kernel_usage": 512 << 10, "container_memory_max_usage_bytes": 12 << 20, "container_memory_failcnt": 7,
		"container_oom_events_total":                        1,
		"container_memory_failures_total|pgfault|container": 100, "container_memory_failures_total|pgmajfault|hierarchy": 2,
		"container_hugetlb_usage_bytes|2MB": 2 << 20, "container_hugetlb_max_usage_bytes|2MB": 4 << 20,
		"container_pressure_cpu_stalled_seconds_total": 2, "container_pressure_cpu_waiting_seconds_total": 5,
		"container_processes": 2, "container_threads": 3, "container_threads_max": 100, "container_file_descriptors": 9,
		"container_sockets": 2, "container_ulimits_soft|max_open_files": 1024,
		"container_blkio_device_usage_total|4093:4093|4093|4093|Read": 4096, "container_blkio_device_usage_total|4093:4093|4093|4093|Write": 8192,
		"container_fs_reads_bytes_total|4093:4093": 4096, "container_fs_writes_bytes_total|4093:4093": 8192,
		"container_fs_reads_total|4093:4093": 1, "container_fs_writes_total|4093:4093": 2,
		"container_spec_cpu_period": 100000, "container_spec_cpu_quota": 20000, "container_spec_cpu_shares": 512,
		"container_spec_memory_limit_bytes": 64 << 20, "container_spec_memory_swap_limit_bytes": 96 << 20,
		"container_spec_memory_reservation_limit_bytes": 0,
		"container_fs_usage_bytes|/dev/vda1":            8192, "container_fs_limit_bytes|/dev/vda1": 10 << 30,
		"container_fs_inodes_total|/dev/vda1": 1000, "container_fs_inodes_free|/dev/vda1": 600,
	}
	for k, v := range want {
		m := got[run1][k]
		if m == nil || m.Value.Value != v {
			t.Errorf("run1 %s = %v, want %d", k, m, v)
			continue
		}
		wantTS := ts0
		if strings.HasPrefix(k, "container_fs_") && !strings.Contains(k, "reads") && !strings.Contains(k, "writes") {
			wantTS = layerTS
		}
		if m.Timestamp != wantTS {
			t.Errorf("run1 %s timestamp %d, want %d", k, m.Timestamp, wantTS)
		}
		if want := []string{"run1", run1, "example.com/app:1", "ns1", "web"}; !slices.Equal(m.LabelValues[:5], want) {
			t.Errorf("run1 %s labels %v, want %v", k, m.LabelValues, want)
		}
	}
	if m := got[run1]["container_start_time_seconds"]; m == nil || m.Value.Value < uint64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("start time %v", m)
	}
	if m := got[run1]["container_cpu_usage_seconds_total|total"]; m.MetricType != runtimeapi.MetricType_COUNTER {
		t.Errorf("cpu is a %v", m.MetricType)
	}
	if m := got[run1]["container_memory_working_set_bytes"]; m.MetricType != runtimeapi.MetricType_GAUGE {
		t.Errorf("working set is a %v", m.MetricType)
	}
	// run2: a reading from a supervisor that predates the detailed
	// fields, a spec without limits, a layer without statfs numbers: the
	// basic metrics, and the kernel's defaults for the spec.
	for _, name := range []string{"container_memory_cache", "container_processes", "container_cpu_cfs_periods_total", "container_cpu_user_seconds_total",
		"container_spec_cpu_quota", "container_fs_limit_bytes|/var/lib/runclet/pods"} {
		if got[run2][name] != nil {
			t.Errorf("run2 has %s", name)
		}
	}
	for k, v := range map[string]uint64{"container_cpu_usage_seconds_total|total": 3, "container_spec_cpu_shares": 1024, "container_spec_cpu_period": 100000,
		"container_spec_memory_limit_bytes": 0, "container_fs_usage_bytes|/var/lib/runclet/pods": 8192} {
		if m := got[run2][k]; m == nil || m.Value.Value != v {
			t.Errorf("run2 %s = %v, want %d", k, m, v)
		}
	}
	// The exited container has its writable layer only.
	if names := slicesSortedKeys(got[done1]); fmt.Sprint(names) != "[container_fs_usage_bytes|/var/lib/runclet/pods]" {
		t.Errorf("exited container's metrics: %v", names)
	}
	// Network, per interface, for the pod; none for the host-network pod.
	for iface, v := range map[string][8]uint64{"eth0": {1000, 10, 3, 1, 2000, 20, 4, 2}, "net1": {5}} {
		for i, name := range []string{"receive_bytes", "receive_packets", "receive_packets_dropped", "receive_errors",
			"transmit_bytes", "transmit_packets", "transmit_packets_dropped", "transmit_errors"} {
			m := got[web]["container_network_"+name+"_total|"+iface]
			if m == nil || m.Value.Value != v[i] || m.Timestamp != time.Unix(3000, 0).UnixNano() ||
				!slices.Equal(m.LabelValues, []string{"", web, "", "ns1", "web", iface}) {
				t.Errorf("%s %s: %v", iface, name, m)
			}
		}
	}
	if len(got[db]) != 0 {
		t.Errorf("host-network pod metrics: %v", got[db])
	}

	// The numbers are the ones ListPodSandboxStats reports.
	sr, err := ts.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range sr.Stats {
		for _, cs := range ps.Linux.Containers {
			m := got[cs.Attributes.Id]
			if cs.Cpu != nil && m["container_cpu_usage_nanoseconds_total"].Value.Value != cs.Cpu.UsageCoreNanoSeconds.Value {
				t.Errorf("%s: cpu differs from the stats", cs.Attributes.Id)
			}
			if cs.Memory != nil && (m["container_memory_working_set_bytes"].Value.Value != cs.Memory.WorkingSetBytes.Value ||
				m["container_memory_usage_bytes"].Value.Value != cs.Memory.UsageBytes.Value) {
				t.Errorf("%s: memory differs from the stats", cs.Attributes.Id)
			}
		}
	}

	// The stream carries the same pods.
	stream, err := ts.rt.StreamPodSandboxMetrics(ctx, &runtimeapi.StreamPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var streamed []string
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, pm := range msg.PodSandboxMetrics {
			streamed = append(streamed, pm.PodSandboxId)
		}
	}
	if fmt.Sprint(sorted(streamed...)) != fmt.Sprint(sorted(web, db)) {
		t.Fatalf("streamed %v", streamed)
	}
}

func slicesSortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
