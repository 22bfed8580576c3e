package cri

import (
	"context"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/runtime/pod"
)

// The CRI metrics RPCs (kubelet's PodAndContainerStatsFromCRI
// /metrics/cadvisor): the numbers the stats RPCs report, read the same
// way (stats.go), as Prometheus-style samples. CRI metric values are
// unsigned integers, so every metric is in an integer unit its name says:
// CPU time is cumulative nanoseconds (container_cpu_usage_nanoseconds_total),
// not cadvisor's float container_cpu_usage_seconds_total, which could
// not be carried without truncation to whole seconds.

// Label keys of container metrics and of pod (network) metrics. Values
// are given in this order.
var (
	containerLabelKeys = []string{"container", "id", "image", "namespace", "pod"}
	podNetLabelKeys    = []string{"interface", "namespace", "pod"}
)

// metricDef is one descriptor and where its value comes from.
type metricDef struct {
	name, help string
	typ        runtimeapi.MetricType
	// one of:
	ctr func(cs *runtimeapi.ContainerStats, raw pod.AppStats, hasRaw bool) (v uint64, ts int64, ok bool)
	net func(i *runtimeapi.NetworkInterfaceUsage) *runtimeapi.UInt64Value
}

func u64v(v *runtimeapi.UInt64Value) (uint64, bool) {
	if v == nil {
		return 0, false
	}
	return v.Value, true
}

func cpuMetric(get func(*runtimeapi.CpuUsage) *runtimeapi.UInt64Value) func(*runtimeapi.ContainerStats, pod.AppStats, bool) (uint64, int64, bool) {
	return func(cs *runtimeapi.ContainerStats, _ pod.AppStats, _ bool) (uint64, int64, bool) {
		if cs.Cpu == nil {
			return 0, 0, false
		}
		v, ok := u64v(get(cs.Cpu))
		return v, cs.Cpu.Timestamp, ok
	}
}

func memMetric(get func(*runtimeapi.MemoryUsage) *runtimeapi.UInt64Value) func(*runtimeapi.ContainerStats, pod.AppStats, bool) (uint64, int64, bool) {
	return func(cs *runtimeapi.ContainerStats, _ pod.AppStats, _ bool) (uint64, int64, bool) {
		if cs.Memory == nil {
			return 0, 0, false
		}
		v, ok := u64v(get(cs.Memory))
		return v, cs.Memory.Timestamp, ok
	}
}

func layerMetric(get func(*runtimeapi.FilesystemUsage) *runtimeapi.UInt64Value) func(*runtimeapi.ContainerStats, pod.AppStats, bool) (uint64, int64, bool) {
	return func(cs *runtimeapi.ContainerStats, _ pod.AppStats, _ bool) (uint64, int64, bool) {
		if cs.WritableLayer == nil {
			return 0, 0, false
		}
		v, ok := u64v(get(cs.WritableLayer))
		return v, cs.WritableLayer.Timestamp, ok
	}
}

// metricDefs are every metric runclet reports, in descriptor order.
var metricDefs = []metricDef{
	{name: "container_cpu_usage_nanoseconds_total", typ: runtimeapi.MetricType_COUNTER,
		help: "Cumulative CPU time consumed by the container, in nanoseconds (ContainerStats cpu.usage_core_nano_seconds).",
		ctr:  cpuMetric(func(c *runtimeapi.CpuUsage) *runtimeapi.UInt64Value { return c.UsageCoreNanoSeconds })},
	{name: "container_memory_working_set_bytes", typ: runtimeapi.MetricType_GAUGE,
		help: "Current working set of the container in bytes: usage minus inactive file pages.",
		ctr:  memMetric(func(m *runtimeapi.MemoryUsage) *runtimeapi.UInt64Value { return m.WorkingSetBytes })},
	{name: "container_memory_rss", typ: runtimeapi.MetricType_GAUGE,
		help: "Size of the container's anonymous and swap cache memory (RSS) in bytes.",
		ctr:  memMetric(func(m *runtimeapi.MemoryUsage) *runtimeapi.UInt64Value { return m.RssBytes })},
	{name: "container_memory_usage_bytes", typ: runtimeapi.MetricType_GAUGE,
		help: "Current memory usage of the container in bytes, including all memory regardless of when it was accessed.",
		ctr:  memMetric(func(m *runtimeapi.MemoryUsage) *runtimeapi.UInt64Value { return m.UsageBytes })},
	{name: "container_memory_page_faults_total", typ: runtimeapi.MetricType_COUNTER,
		help: "Cumulative page faults (pgfault) of the container.",
		ctr:  memMetric(func(m *runtimeapi.MemoryUsage) *runtimeapi.UInt64Value { return m.PageFaults })},
	{name: "container_memory_major_page_faults_total", typ: runtimeapi.MetricType_COUNTER,
		help: "Cumulative major page faults (pgmajfault) of the container.",
		ctr:  memMetric(func(m *runtimeapi.MemoryUsage) *runtimeapi.UInt64Value { return m.MajorPageFaults })},
	{name: "container_pids", typ: runtimeapi.MetricType_GAUGE,
		help: "Tasks (processes and threads) in the container's cgroup (pids.current).",
		ctr: func(cs *runtimeapi.ContainerStats, raw pod.AppStats, ok bool) (uint64, int64, bool) {
			return raw.Pids, raw.Timestamp.UnixNano(), ok
		}},
	{name: "container_fs_writable_layer_bytes", typ: runtimeapi.MetricType_GAUGE,
		help: "Bytes used by the container's writable layer (allocated blocks of its overlay upper directory).",
		ctr:  layerMetric(func(f *runtimeapi.FilesystemUsage) *runtimeapi.UInt64Value { return f.UsedBytes })},
	{name: "container_fs_writable_layer_inodes", typ: runtimeapi.MetricType_GAUGE,
		help: "Inodes used by the container's writable layer.",
		ctr:  layerMetric(func(f *runtimeapi.FilesystemUsage) *runtimeapi.UInt64Value { return f.InodesUsed })},
	{name: "container_network_receive_bytes_total", typ: runtimeapi.MetricType_COUNTER,
		help: "Cumulative bytes received by the pod on an interface of its network namespace.",
		net:  func(i *runtimeapi.NetworkInterfaceUsage) *runtimeapi.UInt64Value { return i.RxBytes }},
	{name: "container_network_receive_errors_total", typ: runtimeapi.MetricType_COUNTER,
		help: "Cumulative receive errors of the pod on an interface of its network namespace.",
		net:  func(i *runtimeapi.NetworkInterfaceUsage) *runtimeapi.UInt64Value { return i.RxErrors }},
	{name: "container_network_transmit_bytes_total", typ: runtimeapi.MetricType_COUNTER,
		help: "Cumulative bytes transmitted by the pod on an interface of its network namespace.",
		net:  func(i *runtimeapi.NetworkInterfaceUsage) *runtimeapi.UInt64Value { return i.TxBytes }},
	{name: "container_network_transmit_errors_total", typ: runtimeapi.MetricType_COUNTER,
		help: "Cumulative transmit errors of the pod on an interface of its network namespace.",
		net:  func(i *runtimeapi.NetworkInterfaceUsage) *runtimeapi.UInt64Value { return i.TxErrors }},
}

// ListMetricDescriptors describes every metric ListPodSandboxMetrics
// returns.
func (s *Server) ListMetricDescriptors(context.Context, *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	out := make([]*runtimeapi.MetricDescriptor, len(metricDefs))
	for i, d := range metricDefs {
		keys := containerLabelKeys
		if d.net != nil {
			keys = podNetLabelKeys
		}
		out[i] = &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: append([]string(nil), keys...)}
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: out}, nil
}

// listPodSandboxMetrics reads every ready pod as ListPodSandboxStats does
// (pods in parallel) and turns the numbers into metrics.
func (s *Server) listPodSandboxMetrics(ctx context.Context) []*runtimeapi.PodSandboxMetrics {
	var sel []sandboxView
	for _, v := range s.idx.sandboxes() {
		if sandboxState(v.pod, v.containers) == runtimeapi.PodSandboxState_SANDBOX_READY {
			sel = append(sel, v)
		}
	}
	out := make([]*runtimeapi.PodSandboxMetrics, len(sel))
	parallel(len(sel), func(i int) {
		st, raw := s.readPodStats(ctx, sel[i])
		out[i] = podMetrics(sel[i], st, raw)
	})
	return out
}

// podMetrics turns one pod's stats into its metrics: a ContainerMetrics
// for each of its containers (an exited one has only its writable layer),
// the network counters as the pod's own.
func podMetrics(v sandboxView, st *runtimeapi.PodSandboxStats, raw map[string]pod.AppStats) *runtimeapi.PodSandboxMetrics {
	p := v.pod
	out := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID}
	images := map[string]string{}
	for _, c := range v.containers {
		images[c.app.ID] = c.imageName
	}
	for _, cs := range st.GetLinux().GetContainers() {
		a := cs.Attributes
		labels := []string{a.GetMetadata().GetName(), a.Id, images[a.Id], p.Namespace, p.Name}
		r, hasRaw := raw[a.Id]
		cm := &runtimeapi.ContainerMetrics{ContainerId: a.Id}
		for _, d := range metricDefs {
			if d.ctr == nil {
				continue
			}
			if val, ts, ok := d.ctr(cs, r, hasRaw); ok {
				cm.Metrics = append(cm.Metrics, &runtimeapi.Metric{
					Name: d.name, Timestamp: ts, MetricType: d.typ, LabelValues: labels, Value: u64(val),
				})
			}
		}
		out.ContainerMetrics = append(out.ContainerMetrics, cm)
	}
	if n := st.GetLinux().GetNetwork(); n != nil {
		for _, i := range n.Interfaces {
			labels := []string{i.Name, p.Namespace, p.Name}
			for _, d := range metricDefs {
				if d.net == nil {
					continue
				}
				if val, ok := u64v(d.net(i)); ok {
					out.Metrics = append(out.Metrics, &runtimeapi.Metric{
						Name: d.name, Timestamp: n.Timestamp, MetricType: d.typ, LabelValues: labels, Value: u64(val),
					})
				}
			}
		}
	}
	return out
}

// ListPodSandboxMetrics returns the metrics of every ready pod and its
// containers.
func (s *Server) ListPodSandboxMetrics(ctx context.Context, _ *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: s.listPodSandboxMetrics(ctx)}, nil
}

// StreamPodSandboxMetrics is ListPodSandboxMetrics in chunks.
func (s *Server) StreamPodSandboxMetrics(_ *runtimeapi.StreamPodSandboxMetricsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	return sendChunks(s.listPodSandboxMetrics(stream.Context()), func(items []*runtimeapi.PodSandboxMetrics) error {
		return stream.Send(&runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: items})
	})
}
