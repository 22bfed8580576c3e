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

const statsMissing = "container and pod sandbox stats (the supervisor's Stats call is not in the stage1 contract yet) are"

// UpdateContainerResources is not implemented.
func (s *Server) UpdateContainerResources(context.Context, *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	return nil, notImplemented("changing a running container's resources (UpdateContainerResources) is")
}

// UpdatePodSandboxResources is not implemented (kubelet treats it as best
// effort: it has already changed the pod's cgroup itself).
func (s *Server) UpdatePodSandboxResources(context.Context, *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	return nil, notImplemented("UpdatePodSandboxResources is")
}

// ContainerStats is not implemented.
func (s *Server) ContainerStats(context.Context, *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	return nil, notImplemented(statsMissing)
}

// ListContainerStats is not implemented.
func (s *Server) ListContainerStats(context.Context, *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	return nil, notImplemented(statsMissing)
}

// StreamContainerStats is not implemented.
func (s *Server) StreamContainerStats(*runtimeapi.StreamContainerStatsRequest, grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	return notImplemented(statsMissing)
}

// PodSandboxStats is not implemented.
func (s *Server) PodSandboxStats(context.Context, *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	return nil, notImplemented(statsMissing)
}

// ListPodSandboxStats is not implemented.
func (s *Server) ListPodSandboxStats(context.Context, *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	return nil, notImplemented(statsMissing)
}

// StreamPodSandboxStats is not implemented.
func (s *Server) StreamPodSandboxStats(*runtimeapi.StreamPodSandboxStatsRequest, grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	return notImplemented(statsMissing)
}

// CheckpointContainer is not implemented.
func (s *Server) CheckpointContainer(context.Context, *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return nil, notImplemented("checkpointing containers (CRIU) is")
}

// CheckpointPod is not implemented.
func (s *Server) CheckpointPod(context.Context, *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	return nil, notImplemented("checkpointing pods (CRIU) is")
}

// RestorePod is not implemented.
func (s *Server) RestorePod(context.Context, *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	return nil, notImplemented("restoring pods from checkpoints (CRIU) is")
}

// GetContainerEvents is not implemented; kubelet then relists (generic
// PLEG), which the in-memory index makes cheap.
func (s *Server) GetContainerEvents(*runtimeapi.GetEventsRequest, grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	return notImplemented("container events (evented PLEG) are")
}

// ListMetricDescriptors is not implemented.
func (s *Server) ListMetricDescriptors(context.Context, *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return nil, notImplemented("pod sandbox metrics are")
}

// ListPodSandboxMetrics is not implemented.
func (s *Server) ListPodSandboxMetrics(context.Context, *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return nil, notImplemented("pod sandbox metrics are")
}

// StreamPodSandboxMetrics is not implemented.
func (s *Server) StreamPodSandboxMetrics(*runtimeapi.StreamPodSandboxMetricsRequest, grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	return notImplemented("pod sandbox metrics are")
}
