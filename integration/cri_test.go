package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

// criInstance is a private runclet (own roots, config, bridge rclcri<rand>
// on 10.215.x.0/24) whose `runclet daemon` is driven over a real CRI
// client.
type criInstance struct {
	*podInstance
	sock   string
	logs   string // the pods' log directory root
	daemon *exec.Cmd
	out    *bytes.Buffer // the daemon's stderr, all runs
	conn   *grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient
	// env is added to the daemon's environment (RUNCLET_FAILPOINT).
	env []string
	// extraFiles are inherited by the daemon as fds 3... (without
	// close-on-exec, as a careless parent would leave them).
	extraFiles []*os.File
}

func newCRIInstance(t *testing.T) *criInstance {
	t.Helper()
	testutil.RequiresRoot(t, whyRoot)
	b := make([]byte, 3)
	rand.Read(b)
	bridge := "rclcri" + hex.EncodeToString(b)
	dir := t.TempDir()
	cfg := fmt.Sprintf("[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = \"10.215.%d.0/24\"\n[cri]\nresync_interval = \"1s\"\n",
		filepath.Join(dir, "no-cni-configs"), bridge, freeThird(t, 215, int(b[0])%250))
	pi := &podInstance{instance: newInstance(t, cfg), bridge: bridge, reg: testregistry.StartTB(t)}
	// Cleanups run last-in first-out: the daemon stops, then every pod
	// left is removed and the host is checked for leftovers.
	t.Cleanup(func() { pi.cleanupAndCheck(t) })
	ci := &criInstance{podInstance: pi, sock: filepath.Join(dir, "cri.sock"), logs: filepath.Join(dir, "logs"), out: &bytes.Buffer{}}
	t.Cleanup(func() {
		ci.stopDaemon()
		if t.Failed() {
			t.Logf("daemon log:\n%s", ci.out)
		}
	})
	return ci
}

// startDaemon starts `runclet daemon` and connects a CRI client.
func (ci *criInstance) startDaemon() {
	t := ci.t
	t.Helper()
	cmd := exec.Command(runcletBin, "--config", ci.config, "--root", ci.root, "--run-root", ci.runRoot,
		"daemon", "--listen", "unix://"+ci.sock, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = ci.out, ci.out
	cmd.ExtraFiles = ci.extraFiles
	if len(ci.env) > 0 {
		cmd.Env = append(os.Environ(), ci.env...)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ci.daemon = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", ci.sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not serve on %s:\n%s", ci.sock, ci.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, err := os.Stat(ci.sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	conn, err := grpc.NewClient("unix://"+ci.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ci.conn, ci.rt, ci.img = conn, runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
}

// stopDaemon sends SIGTERM to the daemon (by its PID) and waits for it.
func (ci *criInstance) stopDaemon() {
	if ci.conn != nil {
		ci.conn.Close()
		ci.conn = nil
	}
	if ci.daemon == nil {
		return
	}
	ci.daemon.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- ci.daemon.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			ci.t.Errorf("daemon exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		ci.daemon.Process.Kill()
		<-done
		ci.t.Errorf("daemon did not stop within 30s of SIGTERM")
	}
	ci.daemon = nil
	if _, err := os.Stat(ci.sock); err == nil {
		ci.t.Errorf("socket %s left after the daemon stopped", ci.sock)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (ci *criInstance) pushBusybox() string {
	ci.t.Helper()
	if _, err := ci.reg.Push("test/busybox:latest", testimage.MustBusybox(ci.t)); err != nil {
		ci.t.Fatal(err)
	}
	return ci.reg.Host() + "/test/busybox:latest"
}

func (ci *criInstance) sandboxConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		Hostname:     name,
		LogDirectory: filepath.Join(ci.logs, name),
		Labels:       map[string]string{"app": name, "tier": "test"},
		Annotations:  map[string]string{"note": "kept verbatim"},
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
}

func containerConfig(name, img string, labels map[string]string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: img},
		Command:  cmd,
		LogPath:  name + "/0.log",
		Labels:   labels,
		Envs:     []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("hello-cri")}},
	}
}

func (ci *criInstance) containerStatus(ctx context.Context, id string) *runtimeapi.ContainerStatus {
	ci.t.Helper()
	st, err := ci.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		ci.t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	return st.Status
}

func (ci *criInstance) waitState(ctx context.Context, id string, want runtimeapi.ContainerState) *runtimeapi.ContainerStatus {
	ci.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := ci.containerStatus(ctx, id)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			ci.t.Fatalf("container %s is %s, want %s", id, st.State, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// criLogLine is one record of the CRI log format.
var criLogLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (stdout|stderr) (F|P) (.*)$`)

// waitLog waits until the CRI log file holds want (stream and content of
// full records) and checks every line's format.
func (ci *criInstance) waitLog(path string, want ...string) {
	ci.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		var got []string
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			m := criLogLine.FindStringSubmatch(sc.Text())
			if m == nil {
				ci.t.Fatalf("log line %q is not in CRI format", sc.Text())
			}
			if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
				ci.t.Fatalf("log time %q: %v", m[1], err)
			}
			got = append(got, m[4]+" "+m[5]+" "+m[6])
		}
		if containsAll(got, want) {
			return
		}
		if time.Now().After(deadline) {
			ci.t.Fatalf("log %s has %q, want %q", path, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

func (ci *criInstance) checkNoMounts() {
	ci.t.Helper()
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, ci.root) || strings.Contains(line, ci.runRoot) {
			ci.t.Errorf("mount left: %s", line)
		}
	}
}

func wantCode(t *testing.T, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: want %s, got %v", what, code, err)
	}
}

func TestCRIPodLifecycle(t *testing.T) {
	ci := newCRIInstance(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	ctx := ctxT(t)
	start := time.Now()

	v, err := ci.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "runclet" || v.RuntimeApiVersion != "v1" || v.RuntimeVersion == "" {
		t.Fatalf("Version: %v %v", v, err)
	}
	st, err := ci.rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if !c.Status {
			t.Fatalf("condition %s is false: %s %s", c.Type, c.Reason, c.Message)
		}
	}
	// fly is served only with cri.fly.enable (security_cve_test.go).
	if len(st.RuntimeHandlers) != 2 || st.RuntimeHandlers[0].Name != "" || st.RuntimeHandlers[1].Name != "runc" {
		t.Fatalf("handlers: %v", st.RuntimeHandlers)
	}

	// Images: pull returns the image ID, which ImageStatus and ListImages
	// report; an absent image is an empty status, not an error.
	pulled, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pulled.ImageRef, "sha256:") {
		t.Fatalf("image_ref %q is not an image ID", pulled.ImageRef)
	}
	is, err := ci.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil || is.Image == nil || is.Image.Id != pulled.ImageRef || len(is.Image.RepoTags) != 1 || is.Image.RepoTags[0] != ref {
		t.Fatalf("ImageStatus: %v %v", is, err)
	}
	absent, err := ci.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ci.reg.Host() + "/test/nothing:1"}})
	if err != nil || absent.Image != nil {
		t.Fatalf("ImageStatus of an absent image: %v %v", absent, err)
	}
	fs, err := ci.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 || fs.ImageFilesystems[0].UsedBytes.Value == 0 {
		t.Fatalf("ImageFsInfo: %v %v", fs, err)
	}
	t.Logf("version, status, pull, image status: %v", time.Since(start).Round(time.Millisecond))

	// A pod sandbox with an address on the test bridge.
	t0 := time.Now()
	sbCfg := ci.sandboxConfig("web")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	t.Logf("RunPodSandbox: %v", time.Since(t0).Round(time.Millisecond))
	ps, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || !strings.HasPrefix(ps.Status.Network.GetIp(), "10.215.") ||
		ps.Status.Metadata.Name != "web" || ps.Status.Annotations["note"] != "kept verbatim" || ps.Status.RuntimeHandler != "runc" || ps.Info["info"] == "" {
		t.Fatalf("PodSandboxStatus: %v", ps)
	}

	// A container that says hello on both streams and exits 3 on SIGTERM.
	t0 = time.Now()
	cc := containerConfig("hello", pulled.ImageRef, map[string]string{"role": "greeter"},
		"sh", "-c", `trap "exit 3" TERM; echo $GREETING; echo oops >&2; while true; do sleep 0.1; done`)
	created, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	ctrID := created.ContainerId
	if _, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sbCfg}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("a second container of the same name and attempt: want AlreadyExists, got %v", err)
	}
	if s := ci.containerStatus(ctx, ctrID); s.State != runtimeapi.ContainerState_CONTAINER_CREATED || s.ImageId != pulled.ImageRef || s.Image.Image != ref {
		t.Fatalf("created: %v", s)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctrID}); err != nil {
		t.Fatal(err)
	}
	t.Logf("CreateContainer + StartContainer: %v", time.Since(t0).Round(time.Millisecond))
	s := ci.containerStatus(ctx, ctrID)
	logPath := filepath.Join(ci.logs, "web", "hello", "0.log")
	if s.State != runtimeapi.ContainerState_CONTAINER_RUNNING || s.StartedAt == 0 || s.LogPath != logPath ||
		s.Labels["role"] != "greeter" || s.User.GetLinux() == nil || s.User.Linux.Uid != 0 {
		t.Fatalf("running: %v", s)
	}
	ci.waitLog(logPath, "stdout F hello-cri", "stderr F oops")

	// ExecSync: output, exit codes, and a timeout that is DeadlineExceeded.
	es, err := ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctrID, Cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 4"}, Timeout: 10})
	if err != nil || string(es.Stdout) != "out\n" || string(es.Stderr) != "err\n" || es.ExitCode != 4 {
		t.Fatalf("ExecSync: %v %v", es, err)
	}
	_, err = ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctrID, Cmd: []string{"sleep", "30"}, Timeout: 1})
	wantCode(t, err, codes.DeadlineExceeded, "ExecSync past its timeout")

	// A second container that exits by itself: its exit is picked up
	// without anyone asking the supervisor.
	quick, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: sbCfg,
		Config: containerConfig("quick", ref, map[string]string{"role": "quitter"}, "sh", "-c", "echo bye; exit 5")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: quick.ContainerId}); err != nil {
		t.Fatal(err)
	}
	qs := ci.waitState(ctx, quick.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED)
	if qs.ExitCode != 5 || qs.Reason != "Error" || qs.FinishedAt < qs.StartedAt {
		t.Fatalf("quick exited: %v", qs)
	}
	ci.waitLog(filepath.Join(ci.logs, "web", "quick", "0.log"), "stdout F bye")

	// ListContainers filters.
	list := func(f *runtimeapi.ContainerFilter) []string {
		t.Helper()
		r, err := ci.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range r.Containers {
			ids = append(ids, c.Id)
		}
		return ids
	}
	running := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
	for name, c := range map[string]struct {
		f    *runtimeapi.ContainerFilter
		want []string
	}{
		"all":         {nil, []string{ctrID, quick.ContainerId}},
		"pod":         {&runtimeapi.ContainerFilter{PodSandboxId: podID}, []string{ctrID, quick.ContainerId}},
		"pod prefix":  {&runtimeapi.ContainerFilter{PodSandboxId: podID[:8]}, []string{ctrID, quick.ContainerId}},
		"running":     {&runtimeapi.ContainerFilter{State: running}, []string{ctrID}},
		"label":       {&runtimeapi.ContainerFilter{LabelSelector: map[string]string{"role": "quitter"}}, []string{quick.ContainerId}},
		"id prefix":   {&runtimeapi.ContainerFilter{Id: ctrID[:10]}, []string{ctrID}},
		"other pod":   {&runtimeapi.ContainerFilter{PodSandboxId: "ffffffff"}, nil},
		"label+state": {&runtimeapi.ContainerFilter{State: running, LabelSelector: map[string]string{"role": "quitter"}}, nil},
	} {
		if got := list(c.f); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ListContainers %s: %v, want %v", name, got, c.want)
		}
	}

	// The daemon restarts while the pod runs: pod and container are still
	// there, still running, and the exit that follows is still seen.
	pid := appPid(t, ci, podID, ctrID)
	t0 = time.Now()
	ci.stopDaemon()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the app (pid %d) did not survive the daemon's stop: %v", pid, err)
	}
	ci.startDaemon()
	t.Logf("daemon restart: %v", time.Since(t0).Round(time.Millisecond))
	pods, err := ci.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Id != podID || pods.Items[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pods after restart: %v %v", pods, err)
	}
	if got := list(&runtimeapi.ContainerFilter{State: running}); fmt.Sprint(got) != fmt.Sprint([]string{ctrID}) {
		t.Fatalf("running containers after restart: %v", got)
	}
	if s := ci.containerStatus(ctx, quick.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.ExitCode != 5 {
		t.Fatalf("quick after restart: %v", s)
	}

	// Stop: SIGTERM, the trap exits 3.
	t0 = time.Now()
	if _, err := ci.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctrID, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	t.Logf("StopContainer: %v", time.Since(t0).Round(time.Millisecond))
	s = ci.containerStatus(ctx, ctrID)
	if s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.ExitCode != 3 || s.Reason != "Error" || s.FinishedAt == 0 {
		t.Fatalf("stopped: %v", s)
	}
	// Idempotent stop and remove; a removed container is NotFound.
	if _, err := ci.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctrID}); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	for range 2 {
		if _, err := ci.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctrID}); err != nil {
			t.Fatalf("remove: %v", err)
		}
	}
	_, err = ci.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrID})
	wantCode(t, err, codes.NotFound, "status of a removed container")
	if _, err := os.Stat(logPath); err != nil {
		t.Fatalf("the CRI log belongs to kubelet and must stay: %v", err)
	}

	t0 = time.Now()
	for range 2 {
		if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Fatalf("stop pod: %v", err)
		}
	}
	ps, err = ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("stopped pod: %v %v", ps, err)
	}
	for range 2 {
		if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Fatalf("remove pod: %v", err)
		}
	}
	t.Logf("StopPodSandbox + RemovePodSandbox: %v", time.Since(t0).Round(time.Millisecond))
	_, err = ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	wantCode(t, err, codes.NotFound, "status of a removed pod")
	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: "0123456789abcdef"}); err != nil {
		t.Fatalf("stopping an unknown pod must succeed: %v", err)
	}
	ci.checkNoMounts()

	for range 2 {
		if _, err := ci.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatalf("remove image: %v", err)
		}
	}
	imgs, err := ci.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil || len(imgs.Images) != 0 {
		t.Fatalf("images after remove: %v %v", imgs, err)
	}
	ci.stopDaemon()
	ci.checkNoMounts()
}

// appPid reads the app's pid from the daemon's verbose status.
func appPid(t *testing.T, ci *criInstance, podID, ctrID string) int {
	t.Helper()
	st, err := ci.rt.ContainerStatus(ctxT(t), &runtimeapi.ContainerStatusRequest{ContainerId: ctrID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("verbose info %q: %v", st.Info["info"], err)
	}
	return info.Pid
}

// crictl is built once from the module proxy and cached.
func crictlBin(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Skip("no cache directory for crictl:", err)
	}
	dir := filepath.Join(cache, "runclet-crictl", "v1.37.0")
	bin := filepath.Join(dir, "crictl")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	t.Logf("building crictl v1.37.0 into %s (once)", dir)
	cmd := exec.Command("go", "install", "sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	cmd.Dir = os.TempDir() // outside this module: install by version
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install crictl: %v\n%s", err, out)
	}
	return bin
}

func TestCRICrictl(t *testing.T) {
	ci := newCRIInstance(t)
	crictl := crictlBin(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		full := append([]string{"--config", filepath.Join(dir, "crictl.yaml"), "--runtime-endpoint", "unix://" + ci.sock,
			"--image-endpoint", "unix://" + ci.sock, "--timeout", "60s"}, args...)
		cmd := exec.Command(crictl, full...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("crictl %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	os.WriteFile(filepath.Join(dir, "crictl.yaml"), []byte("timeout: 60\n"), 0o644)
	podJSON := filepath.Join(dir, "pod.json")
	ctrJSON := filepath.Join(dir, "ctr.json")
	os.WriteFile(podJSON, []byte(fmt.Sprintf(`{
  "metadata": {"name": "crictl-pod", "namespace": "default", "uid": "crictl-pod-uid", "attempt": 0},
  "hostname": "crictl-pod",
  "log_directory": %q,
  "labels": {"made-by": "crictl"},
  "linux": {}
}`, filepath.Join(ci.logs, "crictl-pod"))), 0o644)
	os.WriteFile(ctrJSON, []byte(fmt.Sprintf(`{
  "metadata": {"name": "greeter"},
  "image": {"image": %q},
  "command": ["sh", "-c", "echo hello from crictl; exec sleep 1000"],
  "log_path": "greeter/0.log",
  "linux": {}
}`, ref)), 0o644)

	if out := run("version"); !strings.Contains(out, "RuntimeName:  runclet") || !strings.Contains(out, "RuntimeApiVersion:  v1") {
		t.Fatalf("version:\n%s", out)
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status bool   `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(run("info")), &info); err != nil || len(info.Status.Conditions) != 2 || !info.Status.Conditions[0].Status || !info.Status.Conditions[1].Status {
		t.Fatalf("info: %+v %v", info, err)
	}
	if out := run("pull", ref); !strings.Contains(out, "sha256:") {
		t.Fatalf("pull:\n%s", out)
	}
	if out := run("images"); !strings.Contains(out, ci.reg.Host()+"/test/busybox") {
		t.Fatalf("images:\n%s", out)
	}
	podID := strings.TrimSpace(run("runp", podJSON))
	if out := run("pods"); !strings.Contains(out, podID[:13]) || !strings.Contains(out, "Ready") || !strings.Contains(out, "crictl-pod") {
		t.Fatalf("pods:\n%s", out)
	}
	ctrID := strings.TrimSpace(run("create", podID, ctrJSON, podJSON))
	run("start", ctrID)
	if out := run("ps"); !strings.Contains(out, ctrID[:13]) || !strings.Contains(out, "Running") || !strings.Contains(out, "greeter") {
		t.Fatalf("ps:\n%s", out)
	}
	var insp struct {
		Status struct {
			State   string `json:"state"`
			LogPath string `json:"logPath"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(run("inspect", ctrID)), &insp); err != nil || insp.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("inspect: %+v %v", insp, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(run("logs", ctrID), "hello from crictl") {
		if time.Now().After(deadline) {
			t.Fatalf("logs: %q", run("logs", ctrID))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// crictl prints the captured stdout and then stderr, each with Println.
	if out := run("exec", "-s", ctrID, "echo", "sync-exec"); strings.TrimSpace(out) != "sync-exec" {
		t.Fatalf("exec -s: %q", out)
	}
	if out := run("exec", ctrID, "sh", "-c", "echo streamed-exec"); out != "streamed-exec\n" {
		t.Fatalf("exec (streaming): %q", out)
	}
	portForward(t, crictl, ci, dir, podID, ref, podJSON)
	crictlExecTTY(t, crictl, ci, ctrID)
	// logs -f follows a container until it exits.
	counterJSON := filepath.Join(dir, "counter.json")
	os.WriteFile(counterJSON, []byte(fmt.Sprintf(`{
  "metadata": {"name": "counter"},
  "image": {"image": %q},
  "command": ["sh", "-c", "for i in 1 2 3; do echo count $i; sleep 0.3; done"],
  "log_path": "counter/0.log",
  "linux": {}
}`, ref)), 0o644)
	counterID := strings.TrimSpace(run("create", podID, counterJSON, podJSON))
	run("start", counterID)
	if out := run("logs", "-f", counterID); out != "count 1\ncount 2\ncount 3\n" {
		t.Fatalf("logs -f: %q", out)
	}
	run("rm", counterID)
	if out := run("stats", ctrID); !strings.Contains(out, ctrID[:13]) {
		t.Fatalf("stats:\n%s", out)
	}
	if out := run("statsp", podID); !strings.Contains(out, podID[:13]) && !strings.Contains(out, "crictl-pod") {
		t.Fatalf("statsp:\n%s", out)
	}
	// Events: a follower sees the stop below.
	events := exec.Command(crictl, "--runtime-endpoint", "unix://"+ci.sock, "--image-endpoint", "unix://"+ci.sock, "events")
	var evOut syncBuffer // written by exec's copier while the test reads it
	events.Stdout, events.Stderr = &evOut, &evOut
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	run("stop", ctrID)
	seen := func() bool {
		return strings.Contains(evOut.String(), ctrID) && strings.Contains(evOut.String(), "CONTAINER_STOPPED_EVENT")
	}
	for deadline := time.Now().Add(10 * time.Second); !seen() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	events.Process.Kill()
	events.Wait()
	if !seen() {
		t.Fatalf("crictl events never showed the stop of %s:\n%s", ctrID, evOut.String())
	}
	if err := json.Unmarshal([]byte(run("inspect", ctrID)), &insp); err != nil || insp.Status.State != "CONTAINER_EXITED" {
		t.Fatalf("inspect after stop: %+v %v", insp, err)
	}
	run("rm", ctrID)
	if out := run("ps", "-a"); strings.Contains(out, ctrID[:13]) {
		t.Fatalf("ps -a after rm:\n%s", out)
	}
	run("stopp", podID)
	run("rmp", podID)
	if out := run("pods"); strings.Contains(out, podID[:13]) {
		t.Fatalf("pods after rmp:\n%s", out)
	}
	run("rmi", ref)
	if out := run("images"); strings.Contains(out, "test/busybox") {
		t.Fatalf("images after rmi:\n%s", out)
	}
	var fsInfo struct {
		Status struct {
			ImageFilesystems []struct {
				FsID struct {
					Mountpoint string `json:"mountpoint"`
				} `json:"fsId"`
			} `json:"imageFilesystems"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(run("imagefsinfo")), &fsInfo); err != nil || len(fsInfo.Status.ImageFilesystems) != 1 ||
		!strings.HasPrefix(fsInfo.Status.ImageFilesystems[0].FsID.Mountpoint, ci.root) {
		t.Fatalf("imagefsinfo: %+v %v", fsInfo, err)
	}
	ci.stopDaemon()
	ci.checkNoMounts()
}

// portForward runs a web server in the pod and reaches it through
// `crictl port-forward` (SPDY to the streaming server, then a connection
// made inside the pod's network namespace).
func portForward(t *testing.T, crictl string, ci *criInstance, dir, podID, ref, podJSON string) {
	t.Helper()
	web := filepath.Join(dir, "web.json")
	os.WriteFile(web, []byte(fmt.Sprintf(`{
  "metadata": {"name": "web"},
  "image": {"image": %q},
  "command": ["sh", "-c", "mkdir /www && echo served-in-the-pod > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"],
  "log_path": "web/0.log"
}`, ref)), 0o644)
	base := []string{"--config", filepath.Join(dir, "crictl.yaml"), "--runtime-endpoint", "unix://" + ci.sock, "--image-endpoint", "unix://" + ci.sock, "--timeout", "60s"}
	out, err := exec.Command(crictl, append(base, "create", podID, web, podJSON)...).Output()
	if err != nil {
		t.Fatalf("create web: %v", err)
	}
	webID := strings.TrimSpace(string(out))
	if err := exec.Command(crictl, append(base, "start", webID)...).Run(); err != nil {
		t.Fatalf("start web: %v", err)
	}
	pf := exec.Command(crictl, append(base, "port-forward", podID, "0:8080")...)
	stdout, _ := pf.StdoutPipe()
	pf.Stderr = os.Stderr
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		pf.Process.Kill()
		pf.Wait()
	}()
	// "Forwarding from 127.0.0.1:PORT -> 8080"
	line, err := bufio.NewReader(stdout).ReadString('\n')
	m := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> 8080`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("port-forward said %q: %v", line, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		body, err := httpGet(m[1])
		if err == nil && strings.Contains(body, "served-in-the-pod") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET through port-forward: %q %v", body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	exec.Command(crictl, append(base, "rm", "-f", webID)...).Run()
}

func httpGet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
	var b bytes.Buffer
	_, err = b.ReadFrom(c)
	return b.String(), err
}

// crictlExecTTY runs `crictl exec -i -t` on a real pty, as a person at a
// terminal would, and checks the shell answers and reports its exit code.
func crictlExecTTY(t *testing.T, crictl string, ci *criInstance, ctrID string) {
	t.Helper()
	master, slavePath := openPty(t)
	defer master.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(crictl, "--runtime-endpoint", "unix://"+ci.sock, "--image-endpoint", "unix://"+ci.sock, "exec", "-i", "-t", ctrID, "sh")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out syncBuffer
	drained := make(chan struct{})
	go func() { io.Copy(&out, master); close(drained) }() // ends with EIO once crictl's side is closed
	master.Write([]byte("echo tty=$(tty) sum=$((6*7)); exit 4\r"))
	// crictl exits 1 for any non-zero exit of the command and names the code.
	err = cmd.Wait()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
	}
	if err == nil {
		t.Fatalf("crictl exec -i -t: the shell's exit 4 was lost; output %q", out.String())
	}
	got := out.String()
	if !strings.Contains(got, "sum=42") || !strings.Contains(got, "tty=/dev/pts/") || !strings.Contains(got, "exit code 4") {
		t.Fatalf("crictl exec -i -t output %q", got)
	}
}
