package peer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

var mirroredHosts = []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io", "docker.io"}

func needContainerd(t *testing.T) {
	t.Helper()
	testutil.RequiresRoot(t, "containerd runs as root")
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed", b)
		}
	}
}

// testNet returns a bridge name and subnet of the test's own.
func testNet() (bridge, subnet string) {
	b := make([]byte, 3)
	rand.Read(b)
	return "rclctd" + hex.EncodeToString(b), fmt.Sprintf("10.218.%d.0/24", int(b[0])%250)
}

// testContainerd starts a private containerd for the test, mirroring every
// registry host to reg; the returned stop is also run when the test ends.
func testContainerd(t *testing.T, reg *testregistry.Registry) (dir, endpoint, bridge string, stop func()) {
	t.Helper()
	dir = t.TempDir()
	bridge, subnet := testNet()
	logs := &tailBuffer{max: 1 << 20}
	c := &Containerd{Dir: dir, RegistryURL: reg.URL(), MirrorHosts: mirroredHosts, Bridge: bridge, Subnet: subnet,
		SandboxImage: "registry.k8s.io/pause:3.9", Log: logs}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() {
		if err := c.Stop(); err != nil {
			t.Logf("stop: %v", err)
		}
	}
	// Runs before t.TempDir's removal.
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("containerd log:\n%s", logs)
			return
		}
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.HasPrefix(l, LogPrefix) {
				t.Log(l)
			}
		}
	})
	return dir, c.Endpoint(), bridge, stop
}

// pushPause pushes a pause image: busybox sleeping.
func pushPause(t *testing.T, reg *testregistry.Registry) {
	t.Helper()
	img, err := mutate.Config(testimage.MustBusybox(t), v1.Config{Cmd: []string{"sleep", "100000"}, Env: []string{testimage.DefaultPath}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push("pause:3.9", img); err != nil {
		t.Fatal(err)
	}
}

// TestContainerd runs a pod with a container that echoes on the private
// containerd, pulling through the mirrors, removes it through CRI, leaves a
// second pod running for stop to remove, and checks stop left nothing.
func TestContainerd(t *testing.T) {
	needContainerd(t)
	reg := testregistry.StartTB(t)
	pushPause(t, reg)
	if _, err := reg.Push("library/busybox:test", testimage.MustBusybox(t)); err != nil {
		t.Fatal(err)
	}
	dir, endpoint, bridge, stop := testContainerd(t, reg)
	if !strings.HasPrefix(endpoint, "unix://"+dir+"/") {
		t.Fatalf("endpoint %s is not under %s", endpoint, dir)
	}

	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt, is := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// "busybox" is docker.io/library/busybox, pulled through the mirror.
	const image = "busybox:test"
	pulled, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		t.Fatalf("pull: %v\nregistry requests: %v", err, reg.RequestLog())
	}
	t.Logf("pulled %s as %s", image, pulled.ImageRef)

	logDir := filepath.Join(dir, "pod-logs")
	runPod := func(name string, ports []*runtimeapi.PortMapping, cmd ...string) (podID, ctrID string) {
		t.Helper()
		sc := &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: "default"},
			LogDirectory: filepath.Join(logDir, name),
			Linux:        &runtimeapi.LinuxPodSandboxConfig{},
			PortMappings: ports,
		}
		pod, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sc})
		if err != nil {
			t.Fatalf("run pod %s: %v", name, err)
		}
		ps, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.PodSandboxId})
		if err != nil || !strings.HasPrefix(ps.Status.GetNetwork().GetIp(), "10.218.") {
			t.Fatalf("pod %s status: %v %v", name, ps, err)
		}
		c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: pod.PodSandboxId,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
				Image:    &runtimeapi.ImageSpec{Image: image},
				Command:  cmd,
				LogPath:  "c.log",
				Linux:    &runtimeapi.LinuxContainerConfig{},
			},
			SandboxConfig: sc,
		})
		if err != nil {
			t.Fatalf("create container in %s: %v", name, err)
		}
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			t.Fatalf("start container in %s: %v", name, err)
		}
		return pod.PodSandboxId, c.ContainerId
	}

	podID, ctrID := runPod("echo", nil, "sh", "-c", "echo hello from containerd")
	for {
		st, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrID})
		if err != nil {
			t.Fatal(err)
		}
		if st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			if st.Status.ExitCode != 0 {
				t.Fatalf("container exited %d: %s", st.Status.ExitCode, st.Status.Message)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("container did not exit: %v", st.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, err := os.ReadFile(filepath.Join(logDir, "echo", "c.log"))
	if err != nil || !strings.Contains(string(log), " stdout F hello from containerd\n") {
		t.Fatalf("container log %q, %v", log, err)
	}
	if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctrID}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}

	// A pod left running, with a hostPort, for stop to clean up.
	leftID, _ := runPod("left", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 32123}},
		"sleep", "3600")
	if out, _ := exec.Command("iptables-save", "-t", "nat").Output(); !strings.Contains(string(out), leftID) {
		t.Errorf("no nat rules for pod %s", leftID)
	}
	if len(mountsUnder(dir)) == 0 {
		t.Fatal("no mounts under the directory while a pod runs")
	}
	stop()

	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left under %s: %v", dir, m)
	}
	if err := exec.Command("ip", "link", "show", bridge).Run(); err == nil {
		t.Errorf("bridge %s left", bridge)
	}
	if left, _ := filepath.Glob("/var/lib/cni/results/*" + leftID + "*"); len(left) > 0 {
		t.Errorf("CNI cache entries left: %v", left)
	}
	if out, _ := exec.Command("iptables-save", "-t", "nat").Output(); strings.Contains(string(out), leftID) {
		t.Errorf("nat rules left for pod %s", leftID)
	}
	for _, d := range []string{"root", "state"} {
		if _, err := os.Stat(filepath.Join(dir, d)); err == nil {
			t.Errorf("%s left under %s", d, dir)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(cl), dir) {
			t.Errorf("process %s left: %q", e.Name(), cl)
		}
	}
}

// TestContainerdStopAfterCrash kills containerd (SIGKILL, by PID) under a
// running pod with a host port and checks that stop still removes the
// pod's shim, processes, mounts, nat rules, libcni cache and cgroups.
func TestContainerdStopAfterCrash(t *testing.T) {
	needContainerd(t)
	reg := testregistry.StartTB(t)
	pushPause(t, reg)
	dir, endpoint, bridge, stop := testContainerd(t, reg)
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pod, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "crash", Uid: "crash-uid", Namespace: "default"},
		LogDirectory: filepath.Join(dir, "pod-logs"),
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
		PortMappings: []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 32124}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := pod.PodSandboxId
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io/" + id); len(cg) == 0 {
		t.Errorf("no cgroup k8s.io/%s", id)
	}
	daemon := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil &&
			strings.HasPrefix(string(cl), "/usr/bin/containerd\x00--config\x00"+dir+"/") {
			daemon, _ = strconv.Atoi(e.Name())
		}
	}
	if daemon == 0 {
		t.Fatal("containerd's process not found")
	}
	syscall.Kill(daemon, syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	stop()

	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left under %s: %v", dir, m)
	}
	if err := exec.Command("ip", "link", "show", bridge).Run(); err == nil {
		t.Errorf("bridge %s left", bridge)
	}
	if left, _ := filepath.Glob("/var/lib/cni/results/*" + id + "*"); len(left) > 0 {
		t.Errorf("CNI cache entries left: %v", left)
	}
	if out, _ := exec.Command("iptables-save", "-t", "nat").Output(); strings.Contains(string(out), id) {
		t.Errorf("nat rules left for pod %s", id)
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io/" + id); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
	ents, _ = os.ReadDir("/proc")
	for _, e := range ents {
		if cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(cl), dir) {
			t.Errorf("process %s left: %q", e.Name(), cl)
		}
	}
}
