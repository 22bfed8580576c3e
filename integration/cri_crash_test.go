package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// waitKilled waits for a daemon that a failpoint made SIGKILL itself.
func (ci *criInstance) waitKilled() {
	ci.t.Helper()
	if ci.conn != nil {
		ci.conn.Close()
		ci.conn = nil
	}
	done := make(chan error, 1)
	go func() { done <- ci.daemon.Wait() }()
	select {
	case err := <-done:
		ee, ok := err.(*exec.ExitError)
		if !ok || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			ci.t.Fatalf("daemon ended with %v, want SIGKILL from its failpoint", err)
		}
	case <-time.After(30 * time.Second):
		ci.t.Fatal("the failpoint did not kill the daemon")
	}
	ci.daemon = nil
}

// mountsUnderRoots lists the mount points under the instance's roots.
func (ci *criInstance) mountsUnderRoots() []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (strings.HasPrefix(f[4], ci.root) || strings.HasPrefix(f[4], ci.runRoot)) {
			out = append(out, f[4])
		}
	}
	return out
}

// ipAllocations lists the host-local IPAM files (one per address).
func (ci *criInstance) ipAllocations() []string {
	var out []string
	filepath.Walk(filepath.Join(ci.root, "cni", "networks"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && strings.Count(filepath.Base(p), ".") == 3 {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	return out
}

func (ci *criInstance) veths() int {
	out, _ := exec.Command("ip", "-o", "link", "show", "master", ci.bridge).CombinedOutput()
	return strings.Count(string(out), "veth")
}

// dirsOf lists the entries of dir other than the known ones.
func dirsOf(dir string, known ...string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if !slices.Contains(known, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// The daemon is SIGKILLed in the middle of CreateContainer (its rootfs
// mounted, no bundle yet) and in the middle of RunPodSandbox (its network
// attached, not recorded); each restart removes what the crash left, and
// the pod that was there all along still works.
func TestCRICrashRecovery(t *testing.T) {
	ci := newCRIInstance(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	ctx := ctxT(t)
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	sbCfg := ci.sandboxConfig("survivor")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	survivor := run.PodSandboxId
	keep, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: survivor, SandboxConfig: sbCfg,
		Config: containerConfig("keep", ref, nil, "sleep", "1000")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: keep.ContainerId}); err != nil {
		t.Fatal(err)
	}
	baseMounts, baseIPs := ci.mountsUnderRoots(), ci.ipAllocations()
	if len(baseIPs) != 1 || ci.veths() != 1 {
		t.Fatalf("one pod: addresses %v, %d veths", baseIPs, ci.veths())
	}

	// 1. A crash inside CreateContainer, after the rootfs mount.
	ci.stopDaemon()
	ci.env = []string{"RUNCLET_FAILPOINT=after-rootfs-mount"}
	ci.startDaemon()
	_, err = ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: survivor, SandboxConfig: sbCfg,
		Config: containerConfig("doomed", ref, nil, "sleep", "1000")})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("CreateContainer through a crash: %v", err)
	}
	ci.waitKilled()
	appsDir := filepath.Join(ci.root, "pods", survivor, "apps")
	half := dirsOf(appsDir, keep.ContainerId)
	if len(half) != 1 {
		t.Fatalf("the crash left app dirs %v", half)
	}
	halfApp := half[0]
	if m := ci.mountsUnderRoots(); len(m) != len(baseMounts)+1 || !strings.Contains(strings.Join(m, " "), halfApp) {
		t.Fatalf("the crash should have left the rootfs of %s mounted: %v", halfApp, m)
	}

	// 2. The restart removes the half-made container; then a crash inside
	// RunPodSandbox, after the network is attached.
	ci.env = []string{"RUNCLET_FAILPOINT=after-network-setup"}
	t0 := time.Now()
	ci.startDaemon()
	t.Logf("restart after the CreateContainer crash: %v", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(ci.out.String(), "removed a container whose creation was interrupted") {
		t.Fatal("the daemon did not say it removed the half-made container")
	}
	if left := dirsOf(appsDir, keep.ContainerId); len(left) != 0 {
		t.Fatalf("app dirs left: %v", left)
	}
	if m := ci.mountsUnderRoots(); strings.Contains(strings.Join(m, " "), halfApp) {
		t.Fatalf("the half-made app's rootfs is still mounted: %v", m)
	}
	for _, d := range cgroupDirs(appCgroup("", survivor, halfApp)) {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s of the half-made app left", d)
		}
	}
	if _, err := os.Stat(filepath.Join(ci.runRoot, "runc", halfApp)); err == nil {
		t.Error("libcontainer state of the half-made app left")
	}
	ctrs, err := ci.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil || len(ctrs.Containers) != 1 || ctrs.Containers[0].Id != keep.ContainerId {
		t.Fatalf("containers after the restart: %v %v", ctrs, err)
	}
	_, err = ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: ci.sandboxConfig("victim")})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("RunPodSandbox through a crash: %v", err)
	}
	ci.waitKilled()
	podsLeft := dirsOf(filepath.Join(ci.root, "pods"), survivor)
	if len(podsLeft) != 1 {
		t.Fatalf("the crash left pod dirs %v", podsLeft)
	}
	victim := podsLeft[0]
	if ips := ci.ipAllocations(); len(ips) != 2 || ci.veths() != 2 {
		t.Fatalf("the crash should have left an address and a veth: %v, %d veths", ips, ci.veths())
	}
	if m := ci.mountsUnderRoots(); !strings.Contains(strings.Join(m, " "), filepath.Join(victim, "ns", "net")) {
		t.Fatalf("the crash should have left the pinned netns: %v", m)
	}

	// 3. A normal restart removes the half-made pod sandbox.
	ci.env = nil
	t0 = time.Now()
	ci.startDaemon()
	t.Logf("restart after the RunPodSandbox crash: %v", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(ci.out.String(), "removed a pod sandbox whose creation was interrupted") {
		t.Fatal("the daemon did not say it removed the half-made pod")
	}
	for _, dir := range []string{filepath.Join(ci.root, "pods", victim), filepath.Join(ci.runRoot, "pods", victim)} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s left", dir)
		}
	}
	if m := ci.mountsUnderRoots(); slices.Compare(m, baseMounts) != 0 {
		t.Errorf("mounts under the roots: %v, want the survivor's %v", m, baseMounts)
	}
	for _, m := range ci.mountsUnderRoots() {
		if !strings.Contains(m, survivor) {
			t.Errorf("mount %s belongs to no live pod", m)
		}
	}
	if ips := ci.ipAllocations(); slices.Compare(ips, baseIPs) != 0 || ci.veths() != 1 {
		t.Errorf("addresses %v (want %v), %d veths (want 1)", ips, baseIPs, ci.veths())
	}
	for _, d := range cgroupDirs(podCgroup(victim)) {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s of the crashed pod left", d)
		}
	}
	pods, err := ci.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Id != survivor || pods.Items[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pods after the restarts: %v %v", pods, err)
	}

	// The survivor works: its container still runs and answers, and a
	// new container starts in it.
	if s := ci.containerStatus(ctx, keep.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("keep: %v", s)
	}
	if r, err := ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: keep.ContainerId, Cmd: []string{"echo", "alive"}, Timeout: 10}); err != nil || string(r.Stdout) != "alive\n" {
		t.Fatalf("exec in keep: %v %v", r, err)
	}
	fresh, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: survivor, SandboxConfig: sbCfg,
		Config: containerConfig("doomed", ref, nil, "sh", "-c", "echo $GREETING; sleep 1000")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: fresh.ContainerId}); err != nil {
		t.Fatal(err)
	}
	ci.waitLog(filepath.Join(ci.logs, "survivor", "doomed", "0.log"), "stdout F hello-cri")
	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: survivor}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: survivor}); err != nil {
		t.Fatal(err)
	}
	ci.stopDaemon()
	ci.checkNoMounts()
	if ips := ci.ipAllocations(); len(ips) != 0 || ci.veths() != 0 {
		t.Errorf("after removing every pod: addresses %v, %d veths", ips, ci.veths())
	}
}
