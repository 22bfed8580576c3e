package cri

import (
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/runtime/pod"
)

func TestPodSandboxMetrics(t *testing.T) {
	ts, web, db, run1, done1, run2 := statsFixture(t)
	f := ts.fake
	ctx := context.Background()
	f.mu.Lock()
	f.podStats[web] = &pod.PodStats{
		Timestamp: time.Unix(3000, 0),
		Network: &pod.NetworkStats{DefaultInterface: "eth0", Interfaces: []pod.InterfaceStats{
			{Name: "eth0", RxBytes: 1000, RxErrors: 1, TxBytes: 2000, TxErrors: 2}, {Name: "net1", RxBytes: 5},
		}},
	}
	f.podStats[db] = &pod.PodStats{Timestamp: time.Unix(3000, 0)} // host network: no interfaces
	f.mu.Unlock()
	// A stopped pod is not listed.
	stopped := ts.runPod(t, sandboxConfig("stopped"))
	if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}

	dr, err := ts.rt.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	descs := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range dr.Descriptors {
		if descs[d.Name] != nil || d.Help == "" || len(d.LabelKeys) == 0 {
			t.Fatalf("descriptor %v: duplicate, or no help or labels", d)
		}
		descs[d.Name] = d
	}
	for _, name := range []string{
		"container_cpu_usage_nanoseconds_total", "container_memory_working_set_bytes", "container_memory_rss",
		"container_memory_usage_bytes", "container_memory_page_faults_total", "container_memory_major_page_faults_total",
		"container_pids", "container_fs_writable_layer_bytes", "container_fs_writable_layer_inodes",
		"container_network_receive_bytes_total", "container_network_transmit_bytes_total",
	} {
		if descs[name] == nil {
			t.Errorf("no descriptor %s", name)
		}
	}

	r, err := ts.rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pods []string
	got := map[string]map[string]*runtimeapi.Metric{} // container ID or pod ID/interface -> name -> metric
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
			if got[key] == nil {
				got[key] = map[string]*runtimeapi.Metric{}
			}
			got[key][m.Name] = m
		}
		for _, m := range pm.Metrics {
			check(pm.PodSandboxId+"/"+m.LabelValues[0], m)
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

	// Values are the stats path's.
	ts0 := time.Unix(2000, 0).UnixNano()
	want := map[string]uint64{
		"container_cpu_usage_nanoseconds_total": 1e9, "container_memory_working_set_bytes": 8 << 20,
		"container_memory_rss": 6 << 20, "container_memory_usage_bytes": 10 << 20,
		"container_memory_page_faults_total": 100, "container_memory_major_page_faults_total": 2,
		"container_pids": 3, "container_fs_writable_layer_bytes": 8192, "container_fs_writable_layer_inodes": 2,
	}
	for name, v := range want {
		m := got[run1][name]
		if m == nil || m.Value.Value != v {
			t.Errorf("run1 %s = %v, want %d", name, m, v)
			continue
		}
		wantTS := ts0
		if name == "container_fs_writable_layer_bytes" || name == "container_fs_writable_layer_inodes" {
			wantTS = time.Unix(5, 0).UnixNano()
		}
		if m.Timestamp != wantTS {
			t.Errorf("run1 %s timestamp %d, want %d", name, m.Timestamp, wantTS)
		}
		if want := []string{"run1", run1, "example.com/app:1", "ns1", "web"}; !slices.Equal(m.LabelValues, want) {
			t.Errorf("run1 %s labels %v, want %v", name, m.LabelValues, want)
		}
		if descs[name].LabelKeys[0] != "container" || descs[name].LabelKeys[4] != "pod" {
			t.Errorf("label keys %v", descs[name].LabelKeys)
		}
	}
	if m := got[run1]["container_cpu_usage_nanoseconds_total"]; m.MetricType != runtimeapi.MetricType_COUNTER {
		t.Errorf("cpu is a %v", m.MetricType)
	}
	if m := got[run1]["container_memory_working_set_bytes"]; m.MetricType != runtimeapi.MetricType_GAUGE {
		t.Errorf("working set is a %v", m.MetricType)
	}
	// The exited container has its writable layer only.
	if names := slicesSortedKeys(got[done1]); fmt.Sprint(names) != "[container_fs_writable_layer_bytes container_fs_writable_layer_inodes]" {
		t.Errorf("exited container's metrics: %v", names)
	}
	// Network, per interface, for the pod.
	for key, v := range map[string][2]uint64{web + "/eth0": {1000, 2000}, web + "/net1": {5, 0}} {
		rx, tx := got[key]["container_network_receive_bytes_total"], got[key]["container_network_transmit_bytes_total"]
		if rx == nil || tx == nil || rx.Value.Value != v[0] || tx.Value.Value != v[1] || rx.Timestamp != time.Unix(3000, 0).UnixNano() {
			t.Errorf("%s: rx %v tx %v", key, rx, tx)
		}
	}
	if e := got[web+"/eth0"]["container_network_transmit_errors_total"]; e == nil || e.Value.Value != 2 {
		t.Errorf("tx errors %v", e)
	}

	// Every value agrees with ListPodSandboxStats.
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
			if cs.WritableLayer != nil && m["container_fs_writable_layer_bytes"].Value.Value != cs.WritableLayer.UsedBytes.Value {
				t.Errorf("%s: writable layer differs from the stats", cs.Attributes.Id)
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
