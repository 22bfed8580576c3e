package cri

import (
	"context"

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
