package cri

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
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
	if err := checkFlyIsolation(pc); err != nil {
		return nil, err
	}
	detached := context.WithoutCancel(ctx)
	p, err := s.rt.CreatePod(detached, pc)
	if err != nil {
		return nil, err
	}
	// NRI plugins are asked before the pod is indexed: nothing lists it,
	// or creates containers in it, until they have answered.
	unblock := s.nri.blockSync()
	defer unblock()
	if err := s.nri.runPodSandbox(detached, p); err != nil {
		s.nri.undoRunPodSandbox(detached, p) // plugins asked before the one that failed
		s.removeUnusedPod(detached, p.ID)
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		logger(ctx).Warn("client went away while its pod sandbox was made; removing it", "pod", p.ID)
		s.nri.undoRunPodSandbox(detached, p)
		s.removeUnusedPod(detached, p.ID)
		return nil, err
	}
	s.indexPod(p)
	s.watchPod(p.ID)
	logger(ctx).Info("pod sandbox ready", "pod", p.ID, "name", p.Namespace+"/"+p.Name, "flavor", p.Flavor)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: p.ID}, nil
}

// checkFlyIsolation refuses a fly pod whose config asks for isolation the
// flavor cannot give: fly apps are in the host's network, PID and IPC
// namespaces and user namespace, so the pod must ask for exactly that
// (hostNetwork, hostPID, hostIPC, hostUsers). Running it anyway would hand
// the host to a pod whose spec (and PodSecurity's view of it) says it is
// isolated.
func checkFlyIsolation(pc pod.PodConfig) error {
	if pc.Flavor != pod.FlavorFly {
		return nil
	}
	var need []string
	if !pc.HostNetwork {
		need = append(need, "network")
	}
	if !pc.HostPID {
		need = append(need, "PID")
	}
	if !pc.HostIPC {
		need = append(need, "IPC")
	}
	if pc.UserNS != nil {
		need = append(need, "user")
	}
	if len(need) > 0 {
		return errdefs.InvalidArgument("runtime handler of flavor fly runs pods in the host's namespaces, but this pod asks for its own %s namespace: set hostNetwork, hostPID and hostIPC (and no user namespace), or use an isolating runtime handler", strings.Join(need, ", "))
	}
	return nil
}

// removeUnusedPod removes a pod RunPodSandbox made but does not return.
func (s *Server) removeUnusedPod(ctx context.Context, id string) {
	if err := s.rt.RemovePod(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		logger(ctx).Error("removing a pod sandbox whose creation failed", "pod", id, "err", err)
	}
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
	detached := context.WithoutCancel(ctx)
	if p.State != pod.PodStopped {
		// NRI: containers first, then the pod's event while it is still
		// there (a stopped pod's StopPodSandbox sends nothing).
		s.nri.stopPodSandbox(detached, p.ID, func() { s.stopContainersOf(detached, p.ID) })
	}
	err = s.rt.StopPod(detached, p.ID, 0)
	if err != nil && !errdefs.IsNotFound(err) {
		s.refreshPod(ctx, p.ID) // what did stop is recorded
		return nil, err
	}
	s.refreshPod(ctx, p.ID)
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// stopContainersOf kills a pod's containers that have not exited (as
// StopPod would) and records their exits, each with its NRI StopContainer
// event. Failures are logged: StopPod comes next and reports them.
func (s *Server) stopContainersOf(ctx context.Context, podID string) {
	_, ctrs, err := s.idx.sandbox(podID)
	if err != nil {
		return
	}
	for _, c := range ctrs {
		if c.app.State != pod.AppExited {
			a, err := s.rt.StopApp(ctx, podID, c.app.ID, 0)
			if err != nil {
				if !errdefs.IsNotFound(err) {
					logger(ctx).Warn("stopping a container of a pod sandbox being stopped", "container", c.app.ID, "err", err)
				}
				continue
			}
			s.idx.updateApp(a)
		}
		s.nri.containerStopped(ctx, c.app.ID)
	}
}

// RemovePodSandbox removes a pod and all its containers; a pod that is
// already gone is success.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, ctrs, err := s.idx.sandbox(req.PodSandboxId)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	detached := context.WithoutCancel(ctx)
	var removal *podRemoval
	if s.nri != nil {
		if p.State != pod.PodStopped {
			// Plugins hear the stop before the removal.
			s.nri.stopPodSandbox(detached, p.ID, func() { s.stopContainersOf(detached, p.ID) })
			if fresh, fctrs, err := s.idx.sandbox(p.ID); err == nil {
				p, ctrs = fresh, fctrs
			}
		}
		removal = s.nri.describePod(p, ctrs) // before the bundles go
	}
	if err := s.rt.RemovePod(detached, p.ID); err != nil && !errdefs.IsNotFound(err) {
		s.refreshPod(ctx, p.ID)
		return nil, err
	}
	s.forgetPod(p.ID)
	s.nri.removePodSandbox(detached, removal)
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
