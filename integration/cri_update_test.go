package integration

import (
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIUpdateThenExec is kubelet's in-place pod resize: after
// UpdateContainerResources the new limits are in the app's cgroup and
// exec into the app (probes, kubectl exec) still works.
func TestCRIUpdateThenExec(t *testing.T) {
	ci := newCRIInstance(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	ctx := ctxT(t)
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	sbCfg := ci.sandboxConfig("resize")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	t.Cleanup(func() {
		ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
		ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
	})
	cc := containerConfig("app", ref, nil, "sleep", "1000")
	cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 512}}
	cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.ContainerId
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	exec := func(what string) {
		t.Helper()
		r, err := ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"echo", "ok"}, Timeout: 20})
		if err != nil || r.ExitCode != 0 || strings.TrimSpace(string(r.Stdout)) != "ok" {
			t.Fatalf("exec %s: %v %v", what, r, err)
		}
	}
	exec("before the update")
	for i, mem := range []int64{96 << 20, 48 << 20} {
		if _, err := ci.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
			Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mem, CpuShares: 256 * int64(i+1), CpuQuota: 30000, CpuPeriod: 100000}}); err != nil {
			t.Fatal(err)
		}
		if got := readTrim(t, appCgroupFile(podID, id, "memory", "memory.limit_in_bytes", "memory.max")); got != strconv.FormatInt(mem, 10) {
			t.Fatalf("memory limit after update %d: %s", i, got)
		}
		if q := readTrim(t, appCgroupFile(podID, id, "cpu", "cpu.cfs_quota_us", "cpu.max")); !strings.HasPrefix(q, "30000") {
			t.Fatalf("cpu quota after update %d: %s", i, q)
		}
		exec("after update " + strconv.Itoa(i))
	}
	// An exec'd process gets the app's capabilities and no_new_privs
	// (libcontainer takes them from the container's configuration).
	r, err := ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c",
		"grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/1/status"}, Timeout: 20})
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("exec status: %v %v", r, err)
	}
	if l := strings.Split(strings.TrimSpace(string(r.Stdout)), "\n"); len(l) != 6 || strings.Join(l[:3], ",") != strings.Join(l[3:], ",") ||
		l[0] == "CapEff:\t0000000000000000" || l[1] == "CapBnd:\t000001ffffffffff" {
		t.Fatalf("exec vs app: %q", l)
	}
	// Device rules still hold after the updates: /dev/null is usable,
	// a block device the app was not given is not.
	r, err = ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c",
		"echo x >/dev/null || exit 2; mknod /tmp/sda b 8 0 || exit 3; head -c1 /tmp/sda >/dev/null && exit 4; exit 0"}, Timeout: 20})
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("device rules after the update: %v %v", r, err)
	}
}
