package cri

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/runtime/errdefs"
)

// RunPodSandbox creates a pod. The runtime call runs on a context detached
// from the client's: a pod is either made whole or undone, never left half
// made by a client that gave up; and if the client is gone when it is
// made, nobody will ever learn its ID, so it is removed again.
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if err := validateSandboxConfig(cfg); err != nil {
		return nil, err
	}
	flavor, err := s.flavor(req.RuntimeHandler)
	if err != nil {
		return nil, err
	}
	pc, err := podConfig(cfg, flavor)
	if err != nil {
		return nil, err
	}
	detached := context.WithoutCancel(ctx)
	p, err := s.rt.CreatePod(detached, pc)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		logger(ctx).Warn("client went away while its pod sandbox was made; removing it", "pod", p.ID)
		if rerr := s.rt.RemovePod(detached, p.ID); rerr != nil && !errdefs.IsNotFound(rerr) {
			logger(ctx).Error("removing an orphaned pod sandbox", "pod", p.ID, "err", rerr)
		}
		return nil, err
	}
	s.idx.addPod(p)
	logger(ctx).Info("pod sandbox ready", "pod", p.ID, "name", p.Namespace+"/"+p.Name, "flavor", p.Flavor)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: p.ID}, nil
}

// StopPodSandbox stops a pod's apps, supervisor and network. Stopping a
// stopped or unknown pod succeeds, as kubelet expects.
func (s *Server) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, _, err := s.idx.sandbox(req.PodSandboxId)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	err = s.rt.StopPod(context.WithoutCancel(ctx), p.ID, 0)
	if err != nil && !errdefs.IsNotFound(err) {
		s.refreshPod(ctx, p.ID) // what did stop is recorded
		return nil, err
	}
	s.refreshPod(ctx, p.ID)
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox removes a pod and all its containers; a pod that is
// already gone is success.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, _, err := s.idx.sandbox(req.PodSandboxId)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.rt.RemovePod(context.WithoutCancel(ctx), p.ID); err != nil && !errdefs.IsNotFound(err) {
		s.refreshPod(ctx, p.ID)
		return nil, err
	}
	s.forgetPod(p.ID)
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// PodSandboxStatus answers from memory.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, ctrs, err := s.idx.sandbox(req.PodSandboxId)
	if err != nil {
		return nil, err
	}
	v := sandboxView{pod: p, containers: ctrs}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: criSandboxStatus(v), Timestamp: time.Now().UnixNano()}
	for _, c := range ctrs {
		resp.ContainersStatuses = append(resp.ContainersStatuses, criContainerStatus(c))
	}
	if req.Verbose {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

// sandboxFilter selects pods for ListPodSandbox and StreamPodSandboxes.
func (s *Server) listSandboxes(f *runtimeapi.PodSandboxFilter) []*runtimeapi.PodSandbox {
	var out []*runtimeapi.PodSandbox
	for _, v := range s.idx.sandboxes() {
		sb := criSandbox(v)
		if f != nil {
			if f.Id != "" && !strings.HasPrefix(sb.Id, f.Id) {
				continue
			}
			if f.State != nil && f.State.State != sb.State {
				continue
			}
			if !matchLabels(sb.Labels, f.LabelSelector) {
				continue
			}
		}
		out = append(out, sb)
	}
	return out
}

// ListPodSandbox answers from memory.
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{Items: s.listSandboxes(req.GetFilter())}, nil
}

// streamChunk is how many items a Stream* list RPC sends per message.
const streamChunk = 500

// StreamPodSandboxes is ListPodSandbox in chunks.
func (s *Server) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	return sendChunks(s.listSandboxes(req.GetFilter()), func(items []*runtimeapi.PodSandbox) error {
		return stream.Send(&runtimeapi.StreamPodSandboxesResponse{PodSandboxes: items})
	})
}

// sendChunks sends items in chunks of at least one (none for an empty
// list: the stream just ends).
func sendChunks[T any](items []T, send func([]T) error) error {
	for len(items) > 0 {
		n := min(len(items), streamChunk)
		if err := send(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}
