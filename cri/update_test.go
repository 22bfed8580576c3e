package cri

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestUpdateContainerResources(t *testing.T) {
	f := newFake(t)
	f.addImage("example.com/app:1", "")
	ts := startServer(t, f)
	ctx := context.Background()
	podID := ts.runPod(t, sandboxConfig("web"))
	cc := ctrConfig("app", "example.com/app:1")
	cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 64 << 20}}
	id := ts.createCtr(t, podID, cc)
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}

	_, err := ts.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id[:10], Linux: &runtimeapi.LinuxContainerResources{
		MemoryLimitInBytes: 32 << 20, CpuQuota: 50000, CpuPeriod: 100000, CpusetCpus: "0",
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}, Unified: map[string]string{"memory.high": "30000000"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := f.lastUpdate
	// Where swap can be limited, memory+swap follows the memory limit.
	if r.MemoryLimit != 32<<20 || r.MemorySwapLimit != 32<<20 || r.CPUQuota != 50000 || r.CPUPeriod != 100000 || r.CPUsetCPUs != "0" ||
		r.HugepageLimits["2MB"] != 0 || r.Unified["memory.high"] != "30000000" {
		t.Fatalf("update asked for %+v", r)
	}
	// ContainerStatus reports the resources the bundle now has.
	st, err := ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	res := st.Status.Resources.GetLinux()
	if res == nil || res.MemoryLimitInBytes != 32<<20 || res.MemorySwapLimitInBytes != 32<<20 || res.CpuQuota != 50000 ||
		res.CpuPeriod != 100000 || res.CpusetCpus != "0" || res.Unified["memory.high"] != "30000000" || len(res.HugepageLimits) != 1 {
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
	} {
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
	if n := f.called("UpdateApp"); n != 3 { // the bad hugepage size fails inside
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
