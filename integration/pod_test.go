package integration

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/runclet/runclet/integration/hostcgroup"
	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

// podInstance is a runclet instance with a private pod network (its own
// bridge and subnet, so parallel instances never share addresses) and the
// test images pulled from a registry on 127.0.0.1.
type podInstance struct {
	*instance
	bridge string
	reg    *testregistry.Registry
}

var subnetSeq struct {
	sync.Mutex
	n int
}

func newPodInstance(t *testing.T) *podInstance {
	t.Helper()
	testutil.RequiresRoot(t, whyRoot)
	b := make([]byte, 3)
	rand.Read(b)
	bridge := "rclt" + hex.EncodeToString(b)
	subnetSeq.Lock()
	subnetSeq.n++
	third := freeThird(t, 213, (int(b[0])*7+subnetSeq.n*13)%250)
	subnetSeq.Unlock()
	cfg := fmt.Sprintf("[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = \"10.213.%d.0/24\"\n",
		filepath.Join(t.TempDir(), "no-cni-configs"), bridge, third)
	pi := &podInstance{instance: newInstance(t, cfg), bridge: bridge, reg: testregistry.StartTB(t)}
	t.Cleanup(func() { pi.cleanupAndCheck(t) })
	return pi
}

// image pushes img to the test registry and pulls it into the instance,
// returning the reference to run.
func (pi *podInstance) image(name string, img v1.Image) string {
	pi.t.Helper()
	if _, err := pi.reg.Push("test/"+name+":latest", img); err != nil {
		pi.t.Fatal(err)
	}
	ref := pi.reg.Host() + "/test/" + name + ":latest"
	pi.run("image", "pull", "-q", ref)
	return ref
}

func (pi *podInstance) busybox() string {
	pi.t.Helper()
	img, err := testimage.Busybox()
	if err != nil {
		pi.t.Fatal(err)
	}
	return pi.image("busybox", img)
}

// lastLine is the pod ID `run --detach` and `app sandbox` print.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

type podJSON struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Flavor     string `json:"flavor"`
	NetNS      string `json:"netns"`
	Attachment *struct {
		IPs []string `json:"ips"`
	} `json:"attachment"`
	CgroupParent string `json:"cgroupParent"`
	Apps         []struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		State     string `json:"state"`
		ExitCode  int    `json:"exitCode"`
		Reason    string `json:"reason"`
		OOMKilled bool   `json:"oomKilled"`
		LogPath   string `json:"logPath"`
		Pid       int    `json:"pid"`
	} `json:"apps"`
}

func (pi *podInstance) status(podID string) podJSON {
	pi.t.Helper()
	var p podJSON
	if err := json.Unmarshal([]byte(pi.run("status", podID, "-o", "json")), &p); err != nil {
		pi.t.Fatal(err)
	}
	return p
}

// waitApp waits until the named app has exited and returns the pod.
func (pi *podInstance) waitApp(podID, app string) podJSON {
	pi.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		p := pi.status(podID)
		for _, a := range p.Apps {
			if a.Name == app && a.State == "exited" {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	pi.t.Fatalf("app %s of pod %s did not exit", app, podID)
	return podJSON{}
}

// cleanupAndCheck removes every pod and checks that nothing the pods
// had is left: mounts, cgroups, namespaces, veths, addresses.
func (pi *podInstance) cleanupAndCheck(t *testing.T) {
	var pods []podJSON
	out, stderr, err := pi.try("list", "-o", "json")
	if err != nil {
		t.Errorf("list at cleanup: %v: %s", err, stderr)
	} else if err := json.Unmarshal([]byte(out), &pods); err != nil {
		t.Errorf("list at cleanup: %v: %q", err, out)
	}
	for _, p := range pods {
		if _, stderr, err := pi.try("rm", "--force", p.ID); err != nil {
			t.Errorf("rm %s: %v: %s", p.ID, err, stderr)
		}
		for _, dir := range cgroupDirs(p.CgroupParent) {
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("cgroup %s left after rm", dir)
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, pi.root) || strings.Contains(line, pi.runRoot) {
			t.Errorf("mount left: %s", line)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", pi.bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		t.Errorf("veths left on %s: %s", pi.bridge, out)
	}
	ipam := filepath.Join(pi.root, "cni", "networks")
	filepath.Walk(ipam, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && strings.Count(filepath.Base(p), ".") == 3 {
			t.Errorf("address still allocated: %s", p)
		}
		return nil
	})
	exec.Command("ip", "link", "del", pi.bridge).Run()
}

// cgroupDirs is parent's directory in every cgroup hierarchy this host
// mounts (v1, hybrid or v2).
func cgroupDirs(parent string) []string {
	if parent == "" {
		return nil
	}
	return hostcgroup.Dirs(cgroupPath(parent))
}

func TestRunEchoAndExitCode(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	out := pi.run("run", "--rm", img, "--", "echo", "hello from a pod")
	if out != "hello from a pod\n" {
		t.Fatalf("stdout %q", out)
	}
	stdout, stderr, err := pi.try("run", img, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if stdout != "out\n" || !strings.Contains(stderr, "err\n") {
		t.Fatalf("stdout %q stderr %q", stdout, stderr)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("exit: %v, want code 7", err)
	}
	// Without --rm the pod stays, exited, with its exit recorded, until
	// gc's grace has passed.
	var pods []podJSON
	json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods)
	if len(pods) != 1 || pods[0].State != "exited" || pods[0].Apps[0].ExitCode != 7 || pods[0].Apps[0].Reason != "Error" {
		t.Fatalf("pods after run: %+v", pods)
	}
	if got := pi.run("gc"); strings.Contains(got, "removed pod") {
		t.Fatalf("gc within the grace removed a pod: %s", got)
	}
	if got := pi.run("gc", "--grace=0"); !strings.Contains(got, "removed pod "+pods[0].ID) {
		t.Fatalf("gc: %s", got)
	}
}

func TestAppsOfOnePodShareNetworkAndHostname(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podA := lastLine(pi.run("app", "sandbox", "--hostname", "pod-a"))
	server := lastLine(pi.run("app", "add", podA, img, "--name", "server", "--", "sh", "-c", "echo hi-from-server | nc -l -p 8080; sleep 1"))
	pi.run("app", "start", podA, server)
	client := lastLine(pi.run("app", "add", podA, img, "--name", "client", "--", "sh", "-c", "hostname; for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 8080 && exit 0; sleep 0.2; done; exit 1"))
	pi.run("app", "start", podA, client)
	p := pi.waitApp(podA, "client")
	for _, a := range p.Apps {
		if a.Name == "client" && a.ExitCode != 0 {
			t.Fatalf("client could not reach the server over localhost: %+v", a)
		}
	}
	if logs := pi.run("logs", podA, "client"); logs != "pod-a\nhi-from-server\n" {
		t.Fatalf("client saw %q", logs)
	}

	// Another pod has its own loopback and hostname.
	podB := lastLine(pi.run("app", "sandbox", "--hostname", "pod-b"))
	other := lastLine(pi.run("app", "add", podB, img, "--name", "other", "--", "sh", "-c", "hostname; nc -w 1 127.0.0.1 8080 && echo reached || echo isolated"))
	pi.run("app", "start", podB, other)
	pi.waitApp(podB, "other")
	if logs := pi.run("logs", podB, "other"); logs != "pod-b\nisolated\n" {
		t.Fatalf("separate pod saw %q", logs)
	}
	a, b := pi.status(podA), pi.status(podB)
	if a.Attachment == nil || b.Attachment == nil || a.Attachment.IPs[0] == b.Attachment.IPs[0] {
		t.Fatalf("pods need distinct addresses: %+v %+v", a.Attachment, b.Attachment)
	}
}

func TestMemoryLimitOOMKillRecorded(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	// tail buffers its whole input looking for the last line: memory grows
	// until the 16 MiB limit is hit.
	stdout, _, err := pi.try("run", "--memory", "16M", img, "--", "sh", "-c", "tail /dev/zero")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 137 {
		t.Fatalf("exit %v (stdout %q), want 137", err, stdout)
	}
	var pods []podJSON
	json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods)
	a := pods[0].Apps[0]
	checkOOMKilled(t, "app "+a.ID, a.OOMKilled && a.Reason == "OOMKilled", a.Reason)
}

func TestRuncSeesAppsAndRunsBundles(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	runc := buildRunc(t)
	podID := lastLine(pi.run("run", "--detach", img, "--", "sleep", "300"))
	p := pi.status(podID)
	appID := p.Apps[0].ID
	list, err := exec.Command(runc, "--root", filepath.Join(pi.runRoot, "runc"), "list").CombinedOutput()
	if err != nil || !strings.Contains(string(list), appID) || !strings.Contains(string(list), "running") {
		t.Fatalf("runc list: %v\n%s", err, list)
	}
	state, err := exec.Command(runc, "--root", filepath.Join(pi.runRoot, "runc"), "state", appID).Output()
	var st struct {
		Pid    int    `json:"pid"`
		Status string `json:"status"`
	}
	if err != nil || json.Unmarshal(state, &st) != nil || st.Pid != p.Apps[0].Pid {
		t.Fatalf("runc state: %v %s; runclet says pid %d", err, state, p.Apps[0].Pid)
	}
	// runc exec finds the app's bundle and runs inside it.
	if out, err := exec.Command(runc, "--root", filepath.Join(pi.runRoot, "runc"), "exec", appID, "cat", "/etc/hostname").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("runc exec: %v\n%s", err, out)
	}

	// A generated bundle runs by hand with plain runc, in its own state root.
	pod2 := lastLine(pi.run("app", "sandbox"))
	app2 := lastLine(pi.run("app", "add", pod2, img, "--name", "byhand", "--", "echo", "ran-by-runc"))
	pi.run("app", "start", pod2, app2)
	pi.waitApp(pod2, "byhand")
	bundle := filepath.Join(pi.root, "pods", pod2, "apps", app2, "bundle")
	cmd := exec.Command(runc, "--root", t.TempDir(), "run", "-b", bundle, "byhand-"+app2[:8])
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ran-by-runc" {
		t.Fatalf("runc run -b %s: %v\n%s", bundle, err, out)
	}
}

var runcOnce struct {
	sync.Once
	path string
	err  error
}

// buildRunc builds runc at the version runclet's libcontainer comes from,
// so its state format matches.
func buildRunc(t *testing.T) string {
	runcOnce.Do(func() {
		v, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/opencontainers/runc").Output()
		if err != nil {
			runcOnce.err = err
			return
		}
		cache, _ := os.UserCacheDir()
		dir := filepath.Join(cache, "runclet-test-runc", strings.TrimSpace(string(v)))
		cmd := exec.Command("go", "install", "github.com/opencontainers/runc@"+strings.TrimSpace(string(v)))
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-tags=seccomp")
		if out, err := cmd.CombinedOutput(); err != nil {
			runcOnce.err = fmt.Errorf("go install runc: %v\n%s", err, out)
			return
		}
		runcOnce.path = filepath.Join(dir, "runc")
	})
	if runcOnce.err != nil {
		t.Fatal(runcOnce.err)
	}
	return runcOnce.path
}

func TestFlyPodSeesHostNetwork(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	// Compare network namespaces, not interface lists: other tests add
	// and remove interfaces on this host at any moment.
	hostNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if out := strings.TrimSpace(pi.run("run", "--rm", "--stage1", "fly", img, "--", "readlink", "/proc/self/ns/net")); out != hostNS {
		t.Fatalf("fly pod is in %s, host in %s", out, hostNS)
	}
	if out := strings.TrimSpace(pi.run("run", "--rm", img, "--", "readlink", "/proc/self/ns/net")); out == hostNS || !strings.HasPrefix(out, "net:[") {
		t.Fatalf("runc pod network namespace %q (host %s)", out, hostNS)
	}
	// And the fly pod does see the host's interfaces: this test's bridge,
	// made by the runc pod above (every namespace has a lo).
	if out := pi.run("run", "--rm", "--stage1", "fly", img, "--", "cat", "/proc/net/dev"); !strings.Contains(out, pi.bridge+":") {
		t.Fatalf("fly pod /proc/net/dev lacks the host's %s: %q", pi.bridge, out)
	}
}

func TestPodsOutliveStage0(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	// A foreground `runclet run` killed with SIGKILL: the pod goes on.
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot,
		"run", img, "--", "sh", "-c", "echo started; sleep 300")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "started\n" {
		t.Fatalf("first line %q", line)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	var pods []podJSON
	json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods)
	if len(pods) != 1 || pods[0].State != "ready" || pods[0].Apps[0].State != "running" {
		t.Fatalf("after killing stage0: %+v", pods)
	}
	if err := syscall.Kill(pods[0].Apps[0].Pid, 0); err != nil {
		t.Fatalf("app process %d gone: %v", pods[0].Apps[0].Pid, err)
	}
	pi.run("stop", "--timeout", "1s", pods[0].ID)
	if p := pi.status(pods[0].ID); p.State != "stopped" || p.Apps[0].State != "exited" {
		t.Fatalf("after stop: %+v", p)
	}
}

func TestErrorsNameTheCauseAndUndo(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--rm", pi.reg.Host() + "/test/absent:1"}, "not found"},
		{[]string{"run", "--rm", img, "--", "/no/such/binary"}, `exec: "/no/such/binary": not found`},
		{[]string{"run", "--rm", "--user", "nobody-here", img, "--", "true"}, "nobody-here"},
		{[]string{"run", "--rm", "--port", "99999:80", img}, "--port"},
	} {
		_, stderr, err := pi.try(tc.args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("runclet %v: err %v, stderr %q; want it to mention %q", tc.args, err, stderr, tc.want)
		}
	}
	// The failed runs left no pod behind.
	if out := pi.run("list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("pods left after failures: %s", out)
	}
}

func TestFailedAddAppUndoesAndPortsAreChecked(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("app", "sandbox", "--port", "18931:80"))
	if _, stderr, err := pi.try("app", "add", podID, img, "--user", "ghost", "--", "true"); err == nil || !strings.Contains(stderr, "ghost") {
		t.Fatalf("bad user accepted: %v %s", err, stderr)
	}
	if p := pi.status(podID); len(p.Apps) != 0 {
		t.Fatalf("failed add left apps: %+v", p.Apps)
	}
	apps, _ := os.ReadDir(filepath.Join(pi.root, "pods", podID, "apps"))
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if len(apps) != 0 || strings.Contains(string(mounts), filepath.Join(pi.root, "pods", podID, "apps")) {
		t.Fatalf("failed add left %d app dirs or a rootfs mount", len(apps))
	}

	// The same host port twice is refused, naming the pod that has it.
	_, stderr, err := pi.try("app", "sandbox", "--port", "18931:81")
	if err == nil || !strings.Contains(stderr, "18931/tcp is in use by pod "+podID) {
		t.Fatalf("second mapping of a host port: %v %s", err, stderr)
	}
	// And a port a host process listens on.
	l, lerr := netListen("tcp", "0.0.0.0:18932")
	if lerr != nil {
		t.Fatal(lerr)
	}
	defer l.Close()
	if _, stderr, err := pi.try("app", "sandbox", "--port", "18932:80"); err == nil || !strings.Contains(stderr, "in use on this host") {
		t.Fatalf("port held by a host process: %v %s", err, stderr)
	}
	var pods []podJSON
	json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods)
	if len(pods) != 1 {
		t.Fatalf("refused sandboxes left pods: %d", len(pods))
	}
}

func TestVolumesAndPortMapping(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte("from the host\n"), 0o644)
	out := pi.run("run", "--rm", "-v", dir+":/vol", "-v", dir+":/ro:ro", img, "--", "sh", "-c", "cat /vol/in.txt; echo written > /vol/out.txt; touch /ro/x 2>/dev/null && echo rw || echo ro")
	if out != "from the host\nro\n" {
		t.Fatalf("volume output %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out.txt")); string(b) != "written\n" {
		t.Fatalf("write through the volume: %q", b)
	}
	podID := lastLine(pi.run("run", "-d", "-p", "18933:8080", img, "--", "sh", "-c", "while true; do echo served | nc -l -p 8080; done"))
	p := pi.status(podID)
	gw := strings.Split(p.Attachment.IPs[0], "/")[0]
	var got string
	for i := 0; i < 50 && got != "served\n"; i++ {
		got = dialRead(gw[:strings.LastIndex(gw, ".")] + ".1:18933")
		time.Sleep(100 * time.Millisecond)
	}
	if got != "served\n" {
		t.Fatalf("through the host port: %q", got)
	}
}

func TestSharedPidNamespace(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	shared := lastLine(pi.run("app", "sandbox", "--share-pid"))
	a := lastLine(pi.run("app", "add", shared, img, "--name", "sleeper", "--", "sleep", "4242"))
	pi.run("app", "start", shared, a)
	b := lastLine(pi.run("app", "add", shared, img, "--name", "looker", "--", "sh", "-c", "ps -o args | grep -c '^sleep 4242'"))
	pi.run("app", "start", shared, b)
	pi.waitApp(shared, "looker")
	if out := pi.run("logs", shared, "looker"); out != "1\n" {
		t.Fatalf("an app of a --share-pid pod does not see its sibling: %q", out)
	}
	// Without --share-pid each app has its own.
	own := lastLine(pi.run("app", "sandbox"))
	c := lastLine(pi.run("app", "add", own, img, "--name", "sleeper", "--", "sleep", "4243"))
	pi.run("app", "start", own, c)
	d := lastLine(pi.run("app", "add", own, img, "--name", "looker", "--", "sh", "-c", "ps -o args | grep -c '^sleep 4243'"))
	pi.run("app", "start", own, d)
	pi.waitApp(own, "looker")
	if out := pi.run("logs", own, "looker"); out != "0\n" {
		t.Fatalf("apps of a pod without --share-pid see each other: %q", out)
	}
	pinned := filepath.Join(pi.runRoot, "pods", shared, "ns", "pid")
	if _, err := os.Stat(pinned); err != nil {
		t.Fatalf("shared pid namespace not pinned: %v", err)
	}
	pi.run("rm", shared)
	if _, err := os.Stat(pinned); err == nil {
		t.Fatal("pinned pid namespace left after rm")
	}
}

// "All capabilities" means all this host grants: a host whose bounding set
// lacks some (here CAP_SYS_RESOURCE) must still run privileged apps, with
// exactly the host's bounding set. Without flags an app gets containerd's
// default set; --cap-drop and --cap-add edit it.
func TestPrivilegedAndCapAddAllRunHere(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	host := capField(t, "/proc/self/status", "CapBnd")
	// CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
	// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
	const defaults = 0xa80425fb
	for _, c := range []struct {
		args []string
		want uint64
	}{
		{[]string{"--privileged"}, host},
		{[]string{"--cap-add", "ALL"}, host},
		{nil, defaults & host},
		{[]string{"--cap-drop", "NET_RAW", "--cap-add", "NET_ADMIN"}, (defaults&^(1<<13) | 1<<12) & host},
	} {
		full := append(append([]string{"run", "--rm"}, c.args...), img, "--", "grep", "^Cap", "/proc/self/status")
		out, stderr, err := pi.try(full...)
		if err != nil {
			t.Fatalf("runclet %v: %v %s", c.args, err, stderr)
		}
		for _, field := range []string{"CapEff", "CapPrm", "CapBnd"} {
			if got := capValue(t, out, field); got != c.want {
				t.Errorf("runclet run %v: %s %#x, want %#x (host bounding set %#x)", c.args, field, got, c.want, host)
			}
		}
	}
}

// capField reads a capability mask such as CapBnd from a status file.
func capField(t *testing.T, path, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return capValue(t, string(b), field)
}

func capValue(t *testing.T, status, field string) uint64 {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in %q", field, status)
	return 0
}

// An app stopped right after it started, before its program could take
// the stop signal (pid 1 of a namespace: the kernel drops unhandled
// signals), must still get it, not sit out the grace period and SIGKILL.
func TestStopRightAfterStartDeliversTheStopSignal(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	pod := lastLine(pi.run("app", "sandbox"))
	// The TERM handler arrives a second after start; stop comes at once.
	app := lastLine(pi.run("app", "add", pod, img, "--name", "late-trap", "--",
		"sh", "-c", "sleep 1; trap 'exit 3' TERM; while :; do sleep 0.1; done"))
	pi.run("app", "start", pod, app)
	pi.run("app", "stop", "--timeout", "60s", pod, app)
	apps := pi.status(pod).Apps
	if len(apps) != 1 || apps[0].State != "exited" || apps[0].ExitCode != 3 {
		t.Fatalf("apps = %+v; want late-trap exited with code 3 from its TERM trap (137: the signal was lost and SIGKILL ended it)", apps)
	}
}
