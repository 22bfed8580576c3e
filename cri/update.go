package cri

import (
	"context"
	"maps"
	"slices"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// UpdateContainerResources changes a created or running container's
// cgroup limits (the supervisor's UpdateApp: libcontainer's Set) and its
// bundle to match. As with containerd, limits given as zero keep their
// current values (a limit cannot be lifted this way), a memory limit
// comes with the same memory+swap limit where swap can be limited
// (unless memory_swap_limit_in_bytes says otherwise), and oom_score_adj
// of the running process does not change.
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if err := validateID("container ID", req.ContainerId); err != nil {
		return nil, err
	}
	c, err := s.idx.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	r := req.GetLinux()
	if r == nil {
		if req.GetWindows() != nil {
			return nil, invalid("container %s: Windows resources on a Linux runtime", c.app.ID)
		}
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil // nothing to change
	}
	if err := validateResources(r); err != nil {
		return nil, err
	}
	if err := checkUnified(r, s.features); err != nil {
		return nil, err
	}
	if err := s.updateContainer(context.WithoutCancel(ctx), c, resources(r, s.features)); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// updateContainer changes a created or running container's resources
// (UpdateContainerResources, NRI updates) and indexes what its bundle
// then says.
func (s *Server) updateContainer(ctx context.Context, c *containerEntry, r spec.Resources) error {
	if c.app.State != pod.AppCreated && c.app.State != pod.AppRunning {
		return errdefs.FailedPrecondition("container %s is %s; only a created or running container's resources can change", c.app.ID, containerState(c.app.State))
	}
	if _, err := s.rt.UpdateApp(ctx, c.app.PodID, c.app.ID, r); err != nil {
		return err
	}
	if sp, err := s.rt.AppSpec(c.app.PodID, c.app.ID); err == nil {
		s.idx.updateResources(c.app.ID, specResources(sp))
	}
	return nil
}

// validateResources refuses what no cgroup takes.
func validateResources(r *runtimeapi.LinuxContainerResources) error {
	for _, v := range []struct {
		name string
		val  int64
	}{
		{"cpu_shares", r.CpuShares}, {"cpu_period", r.CpuPeriod},
		{"memory_limit_in_bytes", r.MemoryLimitInBytes}, {"memory_swap_limit_in_bytes", r.MemorySwapLimitInBytes},
	} {
		if v.val < 0 && !(v.name == "memory_swap_limit_in_bytes" && v.val == -1) {
			return invalid("%s %d must not be negative", v.name, v.val)
		}
	}
	if r.CpuQuota < -1 {
		return invalid("cpu_quota %d: want -1 (no quota) or more", r.CpuQuota)
	}
	return nil
}

// checkUnified refuses cgroup v2 keys on a cgroup v1 node with the
// reason, where runc would fail the call with an error kubelet reports as
// Unknown.
func checkUnified(r *runtimeapi.LinuxContainerResources, f Features) error {
	if len(r.GetUnified()) > 0 && !f.CgroupV2 {
		keys := slices.Sorted(maps.Keys(r.GetUnified()))
		return invalid("linux.resources.unified (%s) needs cgroup v2; this node runs cgroup v1", strings.Join(keys, ", "))
	}
	return nil
}

// UpdatePodSandboxResources is accepted and changes nothing: runclet has
// no sandbox process (no pause container) whose cgroup would need the
// pod's new totals, and the pod's cgroup is kubelet's, which kubelet has
// already resized before it calls this (the CRI calls it a notification
// for runtimes that track pod-level resources). The pod must exist.
func (s *Server) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, _, err := s.idx.sandbox(req.PodSandboxId)
	if err != nil {
		return nil, err
	}
	logger(ctx).Debug("pod sandbox resources noted; nothing to apply (no sandbox process, the pod cgroup is kubelet's)", "pod", p.ID,
		"memory", req.GetResources().GetMemoryLimitInBytes(), "cpuQuota", req.GetResources().GetCpuQuota())
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}
