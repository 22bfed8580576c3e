package cri

import (
	"context"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The RPCs runclet does not implement yet. Each says what is missing;
// docs/cri.md lists them under "Not implemented yet". (Methods the
// embedded Unimplemented*Server would answer are all overridden here, so
// every answer names its reason.)

// CheckpointContainer is not implemented.
func (s *Server) CheckpointContainer(context.Context, *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return nil, notImplemented("checkpointing containers (CRIU through libcontainer's Checkpoint; see docs/cri.md) is")
}

// CheckpointPod is not implemented.
func (s *Server) CheckpointPod(context.Context, *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	return nil, notImplemented("checkpointing pods (CRIU) is")
}

// RestorePod is not implemented.
func (s *Server) RestorePod(context.Context, *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	return nil, notImplemented("restoring pods from checkpoints (CRIU) is")
}

// metricsMissing: CRI metrics carry unsigned integers only, so cadvisor's
// counters in fractional units (container_cpu_usage_seconds_total) would
// be truncated; the stats RPCs serve kubelet's summary API instead.
const metricsMissing = "pod sandbox metrics (kubelet's alpha PodAndContainerStatsFromCRI /metrics/cadvisor; the stats RPCs are implemented) are"

// ListMetricDescriptors is not implemented.
func (s *Server) ListMetricDescriptors(context.Context, *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return nil, notImplemented(metricsMissing)
}

// ListPodSandboxMetrics is not implemented.
func (s *Server) ListPodSandboxMetrics(context.Context, *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return nil, notImplemented(metricsMissing)
}

// StreamPodSandboxMetrics is not implemented.
func (s *Server) StreamPodSandboxMetrics(*runtimeapi.StreamPodSandboxMetricsRequest, grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	return notImplemented(metricsMissing)
}
