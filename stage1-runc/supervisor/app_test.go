package supervisor

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/integration/hostcgroup"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
	"github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/stage1-runc/container"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// The test binary is libcontainer's init re-exec target and the pid
// namespace holder, as stage1-runc is.
func init() {
	container.MaybeInit()
	if len(os.Args) > 1 && os.Args[1] == "pidns-init" {
		os.Exit(PidnsInit())
	}
}

// podRig is a supervisor of a fly pod running in this process, and a
// rootfs of the host's static busybox for its apps.
type podRig struct {
	t         *testing.T
	dir       string
	runDir    string
	stateRoot string
	cgroup    string
	rootfs    string
	done      chan error
}

func newPodRig(t *testing.T) *podRig {
	t.Helper()
	testutil.RequiresRoot(t, "apps are containers")
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs a busybox binary for the app's rootfs")
	}
	if out, _ := exec.Command("file", "-L", bb).CombinedOutput(); !strings.Contains(string(out), "statically linked") {
		t.Skipf("needs a static busybox: %s", out)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	b := make([]byte, 4)
	rand.Read(b)
	r := &podRig{t: t, dir: dir, runDir: filepath.Join(dir, "run", "pod"), stateRoot: filepath.Join(dir, "run", "runc"),
		cgroup: "/runclet-suptest-" + hex.EncodeToString(b), rootfs: filepath.Join(dir, "rootfs"), done: make(chan error, 1)}
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(r.rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"sh", "sleep", "echo", "cat"} {
		os.Symlink("busybox", filepath.Join(r.rootfs, "bin", l))
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	go func() {
		r.done <- Run(proto.SuperviseArgs{PodID: "suptest", Flavor: "fly", RunDir: r.runDir, StateRoot: r.stateRoot, ReadyFD: readyFD(t, wr), MaxLogLine: 16 << 10})
	}()
	if s, _ := bufio.NewReader(rd).ReadString('\n'); s != "ok\n" {
		t.Fatalf("supervisor: %q", s)
	}
	t.Cleanup(func() {
		r.call(proto.MethodShutdown, nil, nil)
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("the supervisor did not return after Shutdown")
		}
		// The pod's cgroup is the test's to remove; its apps' must be gone.
		for _, d := range hostcgroup.Dirs(r.cgroup) {
			if ents, _ := os.ReadDir(d); len(ents) > 0 {
				for _, e := range ents {
					if e.IsDir() {
						t.Errorf("cgroup %s left after shutdown", filepath.Join(d, e.Name()))
					}
				}
			}
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				exec.Command("find", d, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";").Run()
				if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
					break
				} else if time.Now().After(deadline) {
					t.Errorf("cannot remove cgroup %s", d)
					break
				}
			}
		}
	})
	return r
}

func (r *podRig) call(method string, params, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return proto.Call(ctx, proto.SocketPath(r.runDir), method, params, result)
}

// addApp writes a bundle running cmd in the busybox rootfs and adds it.
func (r *podRig) addApp(name string, cmd ...string) proto.AppState {
	r.t.Helper()
	return r.addAppWith(name, nil, cmd...)
}

// addAppWith is addApp with edit changing the AddApp parameters.
func (r *podRig) addAppWith(name string, edit func(*proto.AddAppParams), cmd ...string) proto.AppState {
	r.t.Helper()
	s, err := spec.Generate(ocispec.ImageConfig{Env: []string{"PATH=/bin"}},
		func(string) ([]byte, error) { return nil, fs.ErrNotExist },
		spec.App{Name: name, ID: name, Command: cmd, RootfsPath: r.rootfs},
		spec.Pod{ID: "suptest", Name: "suptest", Hostname: "suptest", HostNetwork: true, HostPID: true, HostIPC: true, CgroupParent: r.cgroup},
		spec.Flavor("fly"))
	if err != nil {
		r.t.Fatal(err)
	}
	noSeccomp(s)
	bundle := filepath.Join(r.dir, "apps", name)
	if err := spec.WriteBundle(bundle, s); err != nil {
		r.t.Fatal(err)
	}
	var st proto.AppState
	p := proto.AddAppParams{Name: name, ContainerID: name, Bundle: bundle, LogPath: filepath.Join(r.dir, "apps", name+".log"), ExitFile: r.exitFile(name)}
	if edit != nil {
		edit(&p)
	}
	if err := r.call(proto.MethodAddApp, p, &st); err != nil {
		r.t.Fatalf("AddApp %s: %v", name, err)
	}
	return st
}

func (r *podRig) exitFile(name string) string { return filepath.Join(r.dir, "apps", name+".exit") }

// An app goes through the supervisor's whole life: added, started,
// listed, measured, its log reopened, stopped with its signal and
// SIGKILL after the timeout, its exit recorded, removed; one left running
// is removed by Shutdown.
func TestAppLifecycle(t *testing.T) {
	r := newPodRig(t)
	st := r.addApp("web", "sh", "-c", "trap '' TERM; echo hello; while :; do sleep 1; done")
	if st.Status != "created" {
		t.Fatalf("added: %+v", st)
	}
	if err := r.call(proto.MethodAddApp, proto.AddAppParams{Name: "web", ContainerID: "web2", Bundle: "/b", ExitFile: "/x"}, nil); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second AddApp of a name: %v", err)
	}
	if err := r.call(proto.MethodStartApp, proto.NameParams{Name: "web"}, &st); err != nil || st.Status != "running" || st.Pid <= 0 {
		t.Fatalf("start: %+v %v", st, err)
	}
	var all proto.StateResult
	if err := r.call(proto.MethodState, nil, &all); err != nil || len(all.Apps) != 1 || all.Apps[0].Name != "web" {
		t.Fatalf("state: %+v %v", all, err)
	}
	var stats proto.StatsResult
	if err := r.call(proto.MethodStats, proto.StatsParams{Names: []string{"web"}}, &stats); err != nil || len(stats.Apps) != 1 {
		t.Fatalf("stats: %+v %v", stats, err)
	}
	if err := r.call(proto.MethodReopenLog, proto.NameParams{Name: "web"}, nil); err != nil {
		t.Fatalf("reopen log: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := os.ReadFile(filepath.Join(r.dir, "apps", "web.log")); !strings.Contains(string(b), "stdout F hello"); b, _ = os.ReadFile(filepath.Join(r.dir, "apps", "web.log")) {
		if time.Now().After(deadline) {
			t.Fatalf("log: %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It ignores TERM: the stop ends in SIGKILL after the timeout.
	start := time.Now()
	if err := r.call(proto.MethodStopApp, proto.StopAppParams{Name: "web", Signal: int(syscall.SIGTERM), Timeout: 500 * time.Millisecond}, &st); err != nil {
		t.Fatal(err)
	}
	if st.Exit == nil || st.Exit.Signal != int(syscall.SIGKILL) || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("stop: %+v after %v", st, time.Since(start))
	}
	var ex proto.ExitStatus
	if b, err := os.ReadFile(r.exitFile("web")); err != nil || json.Unmarshal(b, &ex) != nil || ex.ExitCode != 137 {
		t.Fatalf("exit file: %s %v", b, err)
	}
	if err := r.call(proto.MethodRemove, proto.NameParams{Name: "web"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.stateRoot, "web")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("libcontainer state after remove: %v", err)
	}

	// One that exits by itself, and one still running at shutdown.
	r.addApp("quick", "sh", "-c", "exit 3")
	if err := r.call(proto.MethodStartApp, proto.NameParams{Name: "quick"}, &st); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(r.exitFile("quick")); err == nil && json.Unmarshal(b, &ex) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no exit file for an app that exited")
		}
	}
	if ex.ExitCode != 3 || ex.Reason != "Error" {
		t.Fatalf("exit of quick: %+v", ex)
	}
	if err := r.call(proto.MethodKillApp, proto.KillAppParams{Name: "quick", Signal: 9}, nil); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) && !errdefs.IsNotFound(err) {
		t.Fatalf("kill of an exited app: %v", err)
	}
	r.addApp("left", "sleep", "600")
	if err := r.call(proto.MethodStartApp, proto.NameParams{Name: "left"}, &st); err != nil {
		t.Fatal(err)
	}
	if err := r.call(proto.MethodKillApp, proto.KillAppParams{Name: "left", Signal: int(syscall.SIGCONT)}, nil); err != nil {
		t.Fatalf("kill with a harmless signal: %v", err)
	}
	if err := r.call(proto.MethodShutdown, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.Pid, 0); err == nil {
		t.Fatalf("app %d runs after shutdown", st.Pid)
	}
	for _, n := range []string{"quick", "left"} {
		if _, err := os.Stat(filepath.Join(r.stateRoot, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("libcontainer state of %s after shutdown: %v", n, err)
		}
	}
}

// A bundle libcontainer refuses leaves no container, state or cgroup, and
// the name can be used again.
func TestAddAppThatLibcontainerRefusesLeavesNothing(t *testing.T) {
	r := newPodRig(t)
	bundle := filepath.Join(r.dir, "apps", "bad")
	s, err := spec.Generate(ocispec.ImageConfig{Env: []string{"PATH=/bin"}},
		func(string) ([]byte, error) { return nil, fs.ErrNotExist },
		spec.App{Name: "bad", ID: "bad", Command: []string{"sleep", "60"}, RootfsPath: r.rootfs,
			Mounts: []spec.Mount{{HostPath: filepath.Join(r.dir, "missing"), ContainerPath: "/data"}}},
		spec.Pod{ID: "suptest", Name: "suptest", Hostname: "suptest", HostNetwork: true, HostPID: true, HostIPC: true, CgroupParent: r.cgroup},
		spec.Flavor("fly"))
	if err != nil {
		t.Fatal(err)
	}
	noSeccomp(s)
	if err := spec.WriteBundle(bundle, s); err != nil {
		t.Fatal(err)
	}
	err = r.call(proto.MethodAddApp, proto.AddAppParams{Name: "bad", ContainerID: "bad", Bundle: bundle,
		LogPath: filepath.Join(r.dir, "apps", "bad.log"), ExitFile: r.exitFile("bad")}, nil)
	if err == nil {
		t.Fatal("AddApp of a bundle with a missing mount source succeeded")
	}
	t.Logf("refused as it should be: %v", err)
	if _, err := os.Stat(filepath.Join(r.stateRoot, "bad")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("libcontainer state left: %v", err)
	}
	for _, d := range hostcgroup.Dirs(filepath.Join(r.cgroup, "bad")) {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup left: %s", d)
		}
	}
	var all proto.StateResult
	if err := r.call(proto.MethodState, nil, &all); err != nil || len(all.Apps) != 0 {
		t.Fatalf("state after a refused app: %+v %v", all, err)
	}
	r.addApp("bad", "sleep", "60") // the name is free again
}

// noSeccomp drops the seccomp profile: `go test` builds libcontainer
// without the seccomp tag unless asked, and these tests are not about it.
func noSeccomp(s *specs.Spec) {
	if s.Linux != nil {
		s.Linux.Seccomp = nil
	}
}

// With PidNS, Run starts a holder of a new pid namespace, pins it, and at
// shutdown ends the holder and unpins it.
func TestRunHoldsAPidNamespace(t *testing.T) {
	testutil.RequiresRoot(t, "a pid namespace")
	dir := t.TempDir()
	runDir, pin := filepath.Join(dir, "pod"), filepath.Join(dir, "pidns")
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	done := make(chan error, 1)
	go func() {
		done <- Run(proto.SuperviseArgs{PodID: "pidns", Flavor: "runc", RunDir: runDir, StateRoot: filepath.Join(dir, "runc"), ReadyFD: readyFD(t, wr), PidNS: pin})
	}()
	if s, _ := bufio.NewReader(rd).ReadString('\n'); s != "ok\n" {
		t.Fatalf("supervisor: %q", s)
	}
	b, err := os.ReadFile(proto.HolderPidPath(runDir))
	if err != nil {
		t.Fatal(err)
	}
	holder, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	pinned, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", holder))
	if err != nil {
		t.Fatal(err)
	}
	var pinSt, mine unix.Stat_t
	if err := unix.Stat(pin, &pinSt); err != nil {
		t.Fatal(err)
	}
	unix.Stat("/proc/self/ns/pid", &mine)
	if pinSt.Ino == mine.Ino || fmt.Sprintf("pid:[%d]", pinSt.Ino) != pinned {
		t.Fatalf("pin %d, holder's %s, mine %d", pinSt.Ino, pinned, mine.Ino)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := proto.Call(ctx, proto.SocketPath(runDir), proto.MethodShutdown, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(holder, 0); err == nil {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", holder)); strings.Contains(string(cmd), "pidns-init") {
			t.Fatalf("holder %d runs after shutdown", holder)
		}
	}
	for _, p := range []string{pin, proto.HolderPidPath(runDir)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after shutdown: %v", p, err)
		}
	}
}
