package cri

import (
	"context"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Unified (cgroup v2) keys on a cgroup v1 node are refused with the reason
// as InvalidArgument, at create and update, before runc fails them.
func TestUnifiedNeedsCgroupV2(t *testing.T) {
	r := &runtimeapi.LinuxContainerResources{Unified: map[string]string{"memory.high": "1000", "cpu.weight": "5"}}
	err := checkUnified(r, Features{CgroupV2: false})
	if status.Code(toStatus(err)) != codes.InvalidArgument || !strings.Contains(err.Error(), "cpu.weight, memory.high") || !strings.Contains(err.Error(), "cgroup v1") {
		t.Fatalf("unified on cgroup v1: %v", err)
	}
	if err := checkUnified(r, Features{CgroupV2: true}); err != nil {
		t.Fatalf("unified on cgroup v2: %v", err)
	}
	if err := checkUnified(&runtimeapi.LinuxContainerResources{}, Features{}); err != nil {
		t.Fatalf("no unified keys: %v", err)
	}
}

func TestUpdateContainerResources(t *testing.T) {
	a := newReal(t)
	f := &spy{Adapter: a}
	ts := startServer(t, f)
	ctx := context.Background()
	podID := ts.runPod(t, realSandboxConfig(t, "web"))
	cc := ctrConfig("app", testImage)
	cc.Command = []string{"sleep", "3600"}
	cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 64 << 20}}
	id := ts.createCtr(t, podID, cc)
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}

	// runc takes unified (cgroup v2) keys only on cgroup v2.
	unified, wantHigh := map[string]string(nil), ""
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		unified, wantHigh = map[string]string{"memory.high": "30000000"}, "30000000"
	}
	_, err := ts.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id[:10], Linux: &runtimeapi.LinuxContainerResources{
		MemoryLimitInBytes: 32 << 20, CpuQuota: 50000, CpuPeriod: 100000, CpusetCpus: "0",
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}, Unified: unified,
	}})
	if err != nil {
		t.Fatal(err)
	}
	// The app's bundle has what was asked; where swap can be limited,
	// memory+swap follows the memory limit.
	feat := a.Features()
	sp, err := a.AppSpec(podID, id)
	if err != nil {
		t.Fatal(err)
	}
	r := sp.Linux.Resources
	wantHuge := 0
	if feat.Hugetlb {
		wantHuge = 1
	}
	if r == nil || r.Memory == nil || r.CPU == nil || *r.Memory.Limit != 32<<20 || feat.SwapLimit && (r.Memory.Swap == nil || *r.Memory.Swap != 32<<20) ||
		*r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || r.CPU.Cpus != "0" || len(r.HugepageLimits) != wantHuge || r.Unified["memory.high"] != wantHigh {
		t.Fatalf("bundle resources after the update: %+v", r)
	}
	// ContainerStatus reports the resources the bundle now has.
	st, err := ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	res := st.Status.Resources.GetLinux()
	if res == nil || res.MemoryLimitInBytes != 32<<20 || res.MemorySwapLimitInBytes != 32<<20 || res.CpuQuota != 50000 ||
		res.CpuPeriod != 100000 || res.CpusetCpus != "0" || res.Unified["memory.high"] != wantHigh || len(res.HugepageLimits) != wantHuge {
		t.Fatalf("status resources: %v", res)
	}
	// A second update keeps what it does not mention.
	if _, err := ts.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuShares: 256}}); err != nil {
		t.Fatal(err)
	}
	st, _ = ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if res := st.Status.Resources.GetLinux(); res.CpuShares != 256 || res.MemoryLimitInBytes != 32<<20 {
		t.Fatalf("after a second update: %v", res)
	}

	for name, c := range map[string]struct {
		req  *runtimeapi.UpdateContainerResourcesRequest
		code codes.Code
	}{
		"no id":          {&runtimeapi.UpdateContainerResourcesRequest{}, codes.InvalidArgument},
		"unknown":        {&runtimeapi.UpdateContainerResourcesRequest{ContainerId: "ffffffffff", Linux: &runtimeapi.LinuxContainerResources{}}, codes.NotFound},
		"negative":       {&runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -5}}, codes.InvalidArgument},
		"bad quota":      {&runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuQuota: -7}}, codes.InvalidArgument},
		"bad hugepage":   {&runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "huge", Limit: 1}}}}, codes.InvalidArgument},
		"windows":        {&runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Windows: &runtimeapi.WindowsContainerResources{}}, codes.InvalidArgument},
		"nothing to say": {&runtimeapi.UpdateContainerResourcesRequest{ContainerId: id}, codes.OK},
		"unified":        {&runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{Unified: map[string]string{"memory.high": "40000000"}}}, codes.InvalidArgument},
	} {
		if name == "bad hugepage" && !feat.Hugetlb {
			c.code = codes.OK // hugepage limits are dropped on this host (Features.Hugetlb)
		}
		if name == "unified" && feat.CgroupV2 {
			c.code = codes.OK // cgroup v2 takes them (Features.CgroupV2)
		}
		_, err := ts.rt.UpdateContainerResources(ctx, c.req)
		if c.code == codes.OK {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if code := status.Code(err); code != c.code {
			t.Errorf("%s: want %s, got %v", name, c.code, err)
		}
	}
	// An exited container's resources cannot change.
	ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id})
	_, err = ts.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuShares: 2}})
	wantCode(t, err, codes.FailedPrecondition)
	if n := f.called("UpdateApp"); n != 3 { // the bad hugepage size reaches the runtime
		t.Fatalf("UpdateApp called %d times", n)
	}

	// UpdatePodSandboxResources is accepted for a known pod.
	if _, err := ts.rt.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podID,
		Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20}}); err != nil {
		t.Fatal(err)
	}
	_, err = ts.rt.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: "ffffffff"})
	wantCode(t, err, codes.NotFound)
}
