package cri

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/runtime/pod"
)

// The CRI metrics RPCs: what kubelet's PodAndContainerStatsFromCRI serves
// as /metrics/cadvisor in place of cAdvisor, so the names, help texts,
// label keys and meanings are cAdvisor's. Values come from the same reads
// as the stats RPCs (stats.go): one supervisor Stats call per pod for the
// containers' cgroups and processes, the cached writable-layer walk with
// its filesystem's statfs, the pod's network namespace counters, and the
// container's spec as its bundle says (the index).
//
// CRI metric values are unsigned integers: cAdvisor's float seconds are
// whole seconds here (truncated), which is how containerd and CRI-O carry
// them too; container_cpu_usage_nanoseconds_total (runclet's own) keeps
// CPU time exact.

// baseLabelKeys start every metric's label keys (cAdvisor's, less its
// "name", which for CRI runtimes repeats the container ID); a family may
// add keys after them. A container's values: its name, its ID, its image
// as ContainerStatus shows it, the pod's namespace and name. The pod's
// own metrics (network) have an empty container and image and the pod
// sandbox ID as id.
var baseLabelKeys = []string{"container", "id", "image", "namespace", "pod"}

// family is one metric's descriptor.
type family struct {
	name, help string
	typ        runtimeapi.MetricType
	extra      []string // label keys after baseLabelKeys
}

const (
	mCounter = runtimeapi.MetricType_COUNTER
	mGauge   = runtimeapi.MetricType_GAUGE
)

var (
	deviceKey = []string{"device"}

	// Miscellaneous.
	mLastSeen  = &family{"container_last_seen", "Last time a container was seen by the exporter", mGauge, nil}
	mStartTime = &family{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", mGauge, nil}

	// CPU.
	mCPUUsage         = &family{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", mCounter, []string{"cpu"}}
	mCPUUsageNanos    = &family{"container_cpu_usage_nanoseconds_total", "Cumulative cpu time consumed in nanoseconds (container_cpu_usage_seconds_total without truncation to whole seconds).", mCounter, nil}
	mCPUUser          = &family{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", mCounter, nil}
	mCPUSystem        = &family{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", mCounter, nil}
	mCFSPeriods       = &family{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", mCounter, nil}
	mCFSThrottled     = &family{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", mCounter, nil}
	mCFSThrottledTime = &family{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", mCounter, nil}
	mMemCache         = &family{"container_memory_cache", "Number of bytes of page cache memory.", mGauge, nil}
	mMemRSS           = &family{"container_memory_rss", "Size of RSS in bytes.", mGauge, nil}
	mMemKernel        = &family{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", mGauge, nil}
	mMemMapped        = &family{"container_memory_mapped_file", "Size of memory mapped files in bytes.", mGauge, nil}
	mMemSwap          = &family{"container_memory_swap", "Container swap usage in bytes.", mGauge, nil}
	mMemFailcnt       = &family{"container_memory_failcnt", "Number of memory usage hits limits", mCounter, nil}
	mMemUsage         = &family{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", mGauge, nil}
	mMemMaxUsage      = &family{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", mGauge, nil}
	mMemWorkingSet    = &family{"container_memory_working_set_bytes", "Current working set in bytes.", mGauge, nil}
	mMemFailures      = &family{"container_memory_failures_total", "Cumulative count of memory allocation failures.", mCounter, []string{"failure_type", "scope"}}
	mOOMEvents        = &family{"container_oom_events_total", "Count of out of memory events observed for the container", mCounter, nil}
	mHugetlbUsage     = &family{"container_hugetlb_usage_bytes", "Current hugepage usage in bytes", mGauge, []string{"pagesize"}}
	mHugetlbMaxUsage  = &family{"container_hugetlb_max_usage_bytes", "Maximum hugepage usage recorded in bytes", mGauge, []string{"pagesize"}}
	mPressureCPUStall = &family{"container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", mCounter, nil}
	mPressureCPUWait  = &family{"container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", mCounter, nil}
	mPressureMemStall = &family{"container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", mCounter, nil}
	mPressureMemWait  = &family{"container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", mCounter, nil}
	mPressureIOStall  = &family{"container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", mCounter, nil}
	mPressureIOWait   = &family{"container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", mCounter, nil}
	mFsInodesFree     = &family{"container_fs_inodes_free", "Number of available Inodes", mGauge, deviceKey}
	mFsInodesTotal    = &family{"container_fs_inodes_total", "Number of Inodes", mGauge, deviceKey}
	mFsLimit          = &family{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", mGauge, deviceKey}
	mFsUsage          = &family{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", mGauge, deviceKey}
	mFsReadBytes      = &family{"container_fs_reads_bytes_total", "Cumulative count of bytes read", mCounter, deviceKey}
	mFsReads          = &family{"container_fs_reads_total", "Cumulative count of reads completed", mCounter, deviceKey}
	mFsWriteBytes     = &family{"container_fs_writes_bytes_total", "Cumulative count of bytes written", mCounter, deviceKey}
	mFsWrites         = &family{"container_fs_writes_total", "Cumulative count of writes completed", mCounter, deviceKey}
	mBlkioDeviceUsage = &family{"container_blkio_device_usage_total", "Blkio Device bytes usage", mCounter, []string{"device", "major", "minor", "operation"}}
	mProcesses        = &family{"container_processes", "Number of processes running inside the container.", mGauge, nil}
	mFileDescriptors  = &family{"container_file_descriptors", "Number of open file descriptors for the container.", mGauge, nil}
	mSockets          = &family{"container_sockets", "Number of open sockets for the container.", mGauge, nil}
	mThreads          = &family{"container_threads", "Number of threads running inside the container", mGauge, nil}
	mThreadsMax       = &family{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", mGauge, nil}
	mUlimitsSoft      = &family{"container_ulimits_soft", "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", mGauge, []string{"ulimit"}}
	mSpecCPUPeriod    = &family{"container_spec_cpu_period", "CPU period of the container.", mGauge, nil}
	mSpecCPUQuota     = &family{"container_spec_cpu_quota", "CPU quota of the container.", mGauge, nil}
	mSpecCPUShares    = &family{"container_spec_cpu_shares", "CPU share of the container.", mGauge, nil}
	mSpecMemLimit     = &family{"container_spec_memory_limit_bytes", "Memory limit for the container.", mGauge, nil}
	mSpecMemReserve   = &family{"container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", mGauge, nil}
	mSpecMemSwapLimit = &family{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", mGauge, nil}
	mNetRxBytes       = &family{"container_network_receive_bytes_total", "Cumulative count of bytes received", mCounter, []string{"interface"}}
	mNetRxPackets     = &family{"container_network_receive_packets_total", "Cumulative count of packets received", mCounter, []string{"interface"}}
	mNetRxDropped     = &family{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", mCounter, []string{"interface"}}
	mNetRxErrors      = &family{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", mCounter, []string{"interface"}}
	mNetTxBytes       = &family{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", mCounter, []string{"interface"}}
	mNetTxPackets     = &family{"container_network_transmit_packets_total", "Cumulative count of packets transmitted", mCounter, []string{"interface"}}
	mNetTxDropped     = &family{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", mCounter, []string{"interface"}}
	mNetTxErrors      = &family{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", mCounter, []string{"interface"}}
)

// families are every metric runclet reports, in descriptor order.
var families = []*family{
	mLastSeen, mStartTime,
	mCPUUsage, mCPUUsageNanos, mCPUUser, mCPUSystem, mCFSPeriods, mCFSThrottled, mCFSThrottledTime,
	mMemCache, mMemRSS, mMemKernel, mMemMapped, mMemSwap, mMemFailcnt, mMemUsage, mMemMaxUsage, mMemWorkingSet,
	mMemFailures, mOOMEvents, mHugetlbUsage, mHugetlbMaxUsage,
	mPressureCPUStall, mPressureCPUWait, mPressureMemStall, mPressureMemWait, mPressureIOStall, mPressureIOWait,
	mFsInodesFree, mFsInodesTotal, mFsLimit, mFsUsage, mFsReadBytes, mFsReads, mFsWriteBytes, mFsWrites, mBlkioDeviceUsage,
	mProcesses, mFileDescriptors, mSockets, mThreads, mThreadsMax, mUlimitsSoft,
	mSpecCPUPeriod, mSpecCPUQuota, mSpecCPUShares, mSpecMemLimit, mSpecMemReserve, mSpecMemSwapLimit,
	mNetRxBytes, mNetRxPackets, mNetRxDropped, mNetRxErrors, mNetTxBytes, mNetTxPackets, mNetTxDropped, mNetTxErrors,
}

// Defaults of a cgroup whose spec sets no value (what cAdvisor, reading
// the cgroup, would report): the kernel's CFS period and CPU shares.
const (
	defaultCPUPeriod = 100000
	defaultCPUShares = 1024
)

// ListMetricDescriptors describes every metric ListPodSandboxMetrics
// returns.
func (s *Server) ListMetricDescriptors(context.Context, *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	out := make([]*runtimeapi.MetricDescriptor, len(families))
	for i, f := range families {
		out[i] = &runtimeapi.MetricDescriptor{Name: f.name, Help: f.help, LabelKeys: slices.Concat(baseLabelKeys, f.extra)}
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: out}, nil
}

// emitter appends samples with one set of base label values.
type emitter struct {
	out  []*runtimeapi.Metric
	base []string
}

// add appends a sample of f; extra are the values of f's extra keys.
func (e *emitter) add(f *family, ts int64, v uint64, extra ...string) {
	e.out = append(e.out, &runtimeapi.Metric{
		Name: f.name, Timestamp: ts, MetricType: f.typ, LabelValues: slices.Concat(e.base, extra), Value: u64(v),
	})
}

// podSample is what one pod's metrics are made of.
type podSample struct {
	apps   map[string]pod.AppStats // by container ID, live containers the supervisor answered for
	layers map[string]*pod.FsUsage // by container ID, containers whose writable layer was read
	net    *pod.NetworkStats       // nil: host network or unreadable
	netAt  time.Time
}

// listPodSandboxMetrics reads every ready pod (pods in parallel) and turns
// the numbers into metrics.
func (s *Server) listPodSandboxMetrics(ctx context.Context) []*runtimeapi.PodSandboxMetrics {
	var sel []sandboxView
	for _, v := range s.idx.sandboxes() {
		if sandboxState(v.pod, v.containers) == runtimeapi.PodSandboxState_SANDBOX_READY {
			sel = append(sel, v)
		}
	}
	out := make([]*runtimeapi.PodSandboxMetrics, len(sel))
	parallel(len(sel), func(i int) { out[i] = podMetrics(sel[i], s.readPodSample(ctx, sel[i])) })
	return out
}

// readPodSample reads a ready pod as the stats RPCs do: its containers
// through readContainerStats (one supervisor call, cached layer walks),
// its network from PodStats.
func (s *Server) readPodSample(ctx context.Context, v sandboxView) podSample {
	_, apps := s.readContainerStats(ctx, v.containers)
	smp := podSample{apps: apps, layers: map[string]*pod.FsUsage{}}
	for _, c := range v.containers {
		a := c.app
		// A cache hit: readContainerStats has just walked (or reused) it.
		if u, err := s.stats.writableLayer(a.ID, func() (pod.FsUsage, error) { return s.src.WritableLayerUsage(a.PodID, a.ID) }); err == nil {
			smp.layers[a.ID] = &u
		}
	}
	if ps, err := s.src.PodStats(ctx, v.pod); err != nil {
		logger(ctx).Debug("pod sandbox metrics", "pod", v.pod.ID, "err", err)
	} else {
		smp.net, smp.netAt = ps.Network, ps.Timestamp
	}
	return smp
}

// podMetrics turns one pod's sample into its metrics: a ContainerMetrics
// for each of its containers (an exited one, or one its supervisor did
// not answer for, has only its filesystem metrics), the network counters
// as the pod's own.
func podMetrics(v sandboxView, smp podSample) *runtimeapi.PodSandboxMetrics {
	p := v.pod
	out := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID}
	for _, c := range v.containers {
		e := &emitter{base: []string{c.app.Name, c.app.ID, c.imageName, p.Namespace, p.Name}}
		if r, ok := smp.apps[c.app.ID]; ok {
			containerCgroupMetrics(e, c, r)
		}
		if u := smp.layers[c.app.ID]; u != nil {
			layerMetrics(e, u)
		}
		out.ContainerMetrics = append(out.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: c.app.ID, Metrics: e.out})
	}
	if n := smp.net; n != nil {
		ts := smp.netAt.UnixNano()
		e := &emitter{base: []string{"", p.ID, "", p.Namespace, p.Name}}
		for _, i := range n.Interfaces {
			e.add(mNetRxBytes, ts, i.RxBytes, i.Name)
			e.add(mNetRxPackets, ts, i.RxPackets, i.Name)
			e.add(mNetRxDropped, ts, i.RxDropped, i.Name)
			e.add(mNetRxErrors, ts, i.RxErrors, i.Name)
			e.add(mNetTxBytes, ts, i.TxBytes, i.Name)
			e.add(mNetTxPackets, ts, i.TxPackets, i.Name)
			e.add(mNetTxDropped, ts, i.TxDropped, i.Name)
			e.add(mNetTxErrors, ts, i.TxErrors, i.Name)
		}
		out.Metrics = e.out
	}
	return out
}

func seconds(ns uint64) uint64 { return ns / uint64(time.Second) }

// containerCgroupMetrics are a live container's metrics from its
// supervisor's reading r (timestamped with it) and from its spec.
func containerCgroupMetrics(e *emitter, c *containerEntry, r pod.AppStats) {
	ts := r.Timestamp.UnixNano()
	e.add(mLastSeen, ts, uint64(r.Timestamp.Unix()))
	start := c.app.StartedAt
	if start.IsZero() {
		start = c.app.CreatedAt
	}
	if !start.IsZero() {
		e.add(mStartTime, ts, uint64(start.Unix()))
	}

	e.add(mCPUUsage, ts, seconds(r.CPUUsageNanos), "total")
	e.add(mCPUUsageNanos, ts, r.CPUUsageNanos)
	res := c.resources
	if cpu := r.CPU; cpu != nil {
		e.add(mCPUUser, ts, seconds(cpu.UserNanos))
		e.add(mCPUSystem, ts, seconds(cpu.SystemNanos))
		// cAdvisor reports CFS numbers for containers with a quota.
		if (res != nil && res.CpuQuota > 0) || cpu.Periods > 0 {
			e.add(mCFSPeriods, ts, cpu.Periods)
			e.add(mCFSThrottled, ts, cpu.ThrottledPeriods)
			e.add(mCFSThrottledTime, ts, seconds(cpu.ThrottledNanos))
		}
	}

	e.add(mMemUsage, ts, r.MemoryUsage)
	e.add(mMemWorkingSet, ts, r.MemoryWorkingSet)
	e.add(mMemRSS, ts, r.MemoryRSS)
	e.add(mMemSwap, ts, r.SwapUsage)
	// The app's cgroup has no children: its own and its hierarchy's
	// faults are the same counters.
	for _, scope := range []string{"container", "hierarchy"} {
		e.add(mMemFailures, ts, r.PageFaults, "pgfault", scope)
		e.add(mMemFailures, ts, r.MajorPageFaults, "pgmajfault", scope)
	}
	if m := r.Memory; m != nil {
		e.add(mMemCache, ts, m.Cache)
		e.add(mMemMapped, ts, m.MappedFile)
		e.add(mMemKernel, ts, m.Kernel)
		e.add(mMemMaxUsage, ts, m.MaxUsage)
		e.add(mMemFailcnt, ts, m.Failcnt)
		e.add(mOOMEvents, ts, m.OOMKills)
	}
	for _, h := range r.Hugetlb {
		e.add(mHugetlbUsage, ts, h.Usage, h.PageSize)
		e.add(mHugetlbMaxUsage, ts, h.MaxUsage, h.PageSize)
	}
	if pr := r.Pressure; pr != nil {
		for _, x := range []struct {
			t           *pod.PressureTotals
			stall, wait *family
		}{{pr.CPU, mPressureCPUStall, mPressureCPUWait}, {pr.Memory, mPressureMemStall, mPressureMemWait}, {pr.IO, mPressureIOStall, mPressureIOWait}} {
			if x.t != nil {
				e.add(x.stall, ts, x.t.FullMicros/1e6)
				e.add(x.wait, ts, x.t.SomeMicros/1e6)
			}
		}
	}

	for _, d := range r.Blkio {
		name := pod.BlockDeviceName(d.Major, d.Minor)
		major, minor := strconv.FormatUint(d.Major, 10), strconv.FormatUint(d.Minor, 10)
		for _, op := range slices.Sorted(maps.Keys(d.Bytes)) {
			e.add(mBlkioDeviceUsage, ts, d.Bytes[op], name, major, minor, op)
		}
		for _, x := range []struct {
			f      *family
			counts map[string]uint64
			op     string
		}{{mFsReadBytes, d.Bytes, "Read"}, {mFsWriteBytes, d.Bytes, "Write"}, {mFsReads, d.Ops, "Read"}, {mFsWrites, d.Ops, "Write"}} {
			if v, ok := x.counts[x.op]; ok {
				e.add(x.f, ts, v, name)
			}
		}
	}

	if pr := r.Process; pr != nil {
		e.add(mProcesses, ts, pr.Processes)
		e.add(mThreads, ts, pr.Threads)
		e.add(mThreadsMax, ts, pr.ThreadsMax)
		e.add(mFileDescriptors, ts, pr.FileDescriptors)
		e.add(mSockets, ts, pr.Sockets)
		if pr.OpenFilesSoftLimit > 0 {
			e.add(mUlimitsSoft, ts, pr.OpenFilesSoftLimit, "max_open_files")
		}
	}

	if res != nil {
		period, shares := uint64(defaultCPUPeriod), uint64(defaultCPUShares)
		if res.CpuPeriod > 0 {
			period = uint64(res.CpuPeriod)
		}
		if res.CpuShares > 0 {
			shares = uint64(res.CpuShares)
		}
		e.add(mSpecCPUPeriod, ts, period)
		e.add(mSpecCPUShares, ts, shares)
		if res.CpuQuota > 0 {
			e.add(mSpecCPUQuota, ts, uint64(res.CpuQuota))
		}
		// 0: unlimited, as cAdvisor reports it.
		e.add(mSpecMemLimit, ts, uint64(max(res.MemoryLimitInBytes, 0)))
		e.add(mSpecMemSwapLimit, ts, uint64(max(res.MemorySwapLimitInBytes, 0)))
		e.add(mSpecMemReserve, ts, memoryMin(res.Unified))
	}
}

// memoryMin is a cgroup v2 memory.min set through the spec's unified
// map (what cAdvisor reads as the reservation on v2), 0 if none.
func memoryMin(unified map[string]string) uint64 {
	v, err := strconv.ParseUint(strings.TrimSpace(unified["memory.min"]), 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// layerMetrics are a container's writable-layer metrics (timestamped
// with the walk): the layer's bytes on its filesystem and, from statfs,
// the filesystem's size and inodes.
func layerMetrics(e *emitter, u *pod.FsUsage) {
	ts := u.Timestamp.UnixNano()
	dev := u.Device
	if dev == "" {
		dev = u.Mountpoint
	}
	e.add(mFsUsage, ts, u.Bytes, dev)
	if u.Capacity > 0 {
		e.add(mFsLimit, ts, u.Capacity, dev)
		e.add(mFsInodesTotal, ts, u.InodesTotal, dev)
		e.add(mFsInodesFree, ts, u.InodesFree, dev)
	}
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
