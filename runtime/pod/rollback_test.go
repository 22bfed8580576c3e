package pod

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/integration/hostcgroup"
	"github.com/runclet/runclet/integration/leakcheck"
	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/internal/testutil"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/spec"
)

// The rollback tests make CreatePod and AddApp fail at each step, for
// real (a CNI plugin that fails, a supervisor that is missing, exits at
// once or is killed while it starts, libcontainer refusing a container,
// a bundle write that fails), and then look at the host: nothing the
// failed call made may be left.

var stage1Once struct {
	sync.Once
	path string
	err  error
}

// stage1Binary builds stage1-runc once per test binary, as shipped.
func stage1Binary(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t, "pods need namespaces, overlayfs, cgroups and CNI")
	stage1Once.Do(func() {
		dir, err := os.MkdirTemp("", "runclet-pod-test-")
		if err != nil {
			stage1Once.err = err
			return
		}
		os.Chmod(dir, 0o755) // a pod's mapped root runs it too (ns-holder)
		stage1Once.path = filepath.Join(dir, "stage1-runc")
		out, err := exec.Command("go", "build", "-tags", "seccomp", "-o", stage1Once.path, "github.com/runclet/runclet/cmd/stage1-runc").CombinedOutput()
		if err != nil {
			stage1Once.err = fmt.Errorf("build stage1-runc: %v\n%s", err, out)
		}
	})
	if stage1Once.err != nil {
		t.Fatal(stage1Once.err)
	}
	return stage1Once.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if stage1Once.path != "" {
		os.RemoveAll(filepath.Dir(stage1Once.path))
	}
	os.Exit(code)
}

// rig is a private Manager with its own roots, bridge and subnet, and a
// snapshot of the host taken before it made anything.
type rig struct {
	t      *testing.T
	m      *Manager
	l      Layout
	images *image.Store
	bridge string
	scope  leakcheck.Scope
	before leakcheck.Snapshot
	image  string

	// holders collects the pids of pid namespace holders the pods' supervisors
	// start (they run under no name of the roots, so leakcheck misses them).
	mu      sync.Mutex
	holders map[int]bool
}

type rigOptions struct {
	stage1 string // "" for the real one
	// cniFail puts a network config in place whose second plugin fails ADD.
	cniFail bool
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	testutil.RequiresRoot(t, "pods need namespaces, overlayfs, cgroups and CNI")
	stage1 := stage1Binary(t)
	if o.stage1 != "" {
		stage1 = o.stage1
	}
	dir := t.TempDir()
	root, runRoot := filepath.Join(dir, "data"), filepath.Join(dir, "run")
	b := make([]byte, 3)
	rand.Read(b)
	bridge := "rclrb" + hex.EncodeToString(b)[:5]
	subnet := freeSubnet(t, int(b[0]))
	confDir := filepath.Join(dir, "no-cni-configs")
	binDirs := []string(nil)
	if o.cniFail {
		confDir, binDirs = failingCNI(t, dir, bridge, subnet)
	}
	ipam := filepath.Join(root, "cni", "networks")
	net, err := network.New(network.Config{
		ConfDir: confDir, BinDirs: binDirs, CacheDir: filepath.Join(root, "cni", "cache"),
		IPAMDataDir: ipam, DefaultBridge: bridge, DefaultSubnet: subnet, StateDir: filepath.Join(root, "cni"),
	})
	if err != nil {
		t.Fatal(err)
	}
	images, err := image.Open(root, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Layout: Layout{Root: root, RunRoot: runRoot}, Images: images, Network: net, Stage1Path: stage1})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := leakcheck.WatchPods(root)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, m: m, l: m.Layout(), images: images, bridge: bridge}
	r.scope = leakcheck.Scope{Root: root, RunRoot: runRoot, Bridge: bridge, Pods: watch,
		PodCgroupParent: "/runclet", IPAMDirs: []string{ipam, filepath.Join(dir, "cni-ipam")}}
	r.before = leakcheck.Take(r.scope)
	r.holders = map[int]bool{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go r.watchHolders(stop, done)
	t.Cleanup(func() {
		close(stop)
		<-done
		// Whatever a failed test left goes, so the host stays clean.
		ids, _ := watch.IDs()
		for _, id := range ids {
			r.m.RemovePod(context.Background(), id)
		}
		for pid := range r.holders {
			killHolder(pid)
		}
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && (strings.HasPrefix(f[4], root) || strings.HasPrefix(f[4], runRoot)) {
				syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
		exec.Command("ip", "link", "del", bridge).Run()
		watch.Close()
	})
	return r
}

// watchHolders records the pid of every pid namespace holder a supervisor
// of this rig writes down, until stop.
func (r *rig) watchHolders(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		files, _ := filepath.Glob(filepath.Join(r.l.RunRoot, "pods", "*", "pidns-init.pid"))
		for _, f := range files {
			var pid int
			if b, err := os.ReadFile(f); err == nil {
				if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
					r.mu.Lock()
					r.holders[pid] = true
					r.mu.Unlock()
				}
			}
		}
		select {
		case <-stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// freeSubnet picks a 10.221.N.0/24 no address of this host is in.
func freeSubnet(t *testing.T, seed int) string {
	out, _ := exec.Command("ip", "-o", "addr").CombinedOutput()
	for i := 0; i < 250; i++ {
		n := (seed + i*7) % 250
		if !strings.Contains(string(out), fmt.Sprintf(" 10.221.%d.", n)) {
			return fmt.Sprintf("10.221.%d.0/24", n)
		}
	}
	t.Fatal("no free 10.221.N.0/24")
	return ""
}

// failingCNI writes a network config whose bridge plugin attaches the pod
// (veth, address) and whose next plugin then fails ADD, as a broken
// firewall or portmap plugin would.
func failingCNI(t *testing.T, dir, bridge, subnet string) (confDir string, binDirs []string) {
	confDir, bin := filepath.Join(dir, "cni-conf"), filepath.Join(dir, "cni-bin")
	for _, d := range []string{confDir, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := `#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
	echo '{"cniVersion":"1.0.0","code":999,"msg":"injected failure"}'
	exit 1
fi
if [ "$CNI_COMMAND" = VERSION ]; then
	echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'
fi
exit 0
`
	if err := os.WriteFile(filepath.Join(bin, "rclfail"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"rollback","plugins":[
{"type":"bridge","bridge":%q,"isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}},
{"type":"rclfail"}]}`, bridge, subnet, filepath.Join(dir, "cni-ipam"))
	if err := os.WriteFile(filepath.Join(confDir, "10-rollback.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return confDir, []string{bin, "/usr/lib/cni", "/opt/cni/bin"}
}

// busybox imports the test busybox image once into this rig's store.
func (r *rig) busybox() string {
	r.t.Helper()
	if r.image != "" {
		return r.image
	}
	img, err := testimage.Busybox()
	if err != nil {
		r.t.Fatal(err)
	}
	ref := "example.com/test/busybox:latest"
	tar := filepath.Join(r.t.TempDir(), "busybox.tar")
	if err := testimage.WriteOCIArchive(tar, map[string]v1.Image{ref: img}); err != nil {
		r.t.Fatal(err)
	}
	f, err := os.Open(tar)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := r.images.Import(context.Background(), f, nil); err != nil {
		r.t.Fatal(err)
	}
	r.image = ref
	return ref
}

// noLeaks fails the test for anything that appeared on the host since the
// rig was made: mounts and pins under the roots, pod dirs, veths, IP
// allocations, pod cgroups, supervisor and holder processes, libcontainer
// state and per-pod run dirs.
func (r *rig) noLeaks(what string) {
	r.t.Helper()
	var leaks []string
	// A dying supervisor or holder takes a moment to leave /proc.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		leaks = r.before.Leaks(r.scope)
		leaks = append(leaks, entriesOf("libcontainer state", r.l.StateRoot())...)
		leaks = append(leaks, entriesOf("run dir", filepath.Join(r.l.RunRoot, "pods"))...)
		r.mu.Lock()
		for pid := range r.holders {
			if isPidnsHolder(pid) {
				leaks = append(leaks, fmt.Sprintf("pid namespace holder %d", pid))
			}
		}
		r.mu.Unlock()
		if len(leaks) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, l := range leaks {
		r.t.Errorf("%s left: %s", what, l)
	}
}

func entriesOf(kind, dir string) []string {
	es, _ := os.ReadDir(dir)
	var out []string
	for _, e := range es {
		out = append(out, kind+" "+filepath.Join(dir, e.Name()))
	}
	return out
}

func podConfig(name string) PodConfig {
	return PodConfig{Name: name, Namespace: "default", UID: name + "-uid"}
}

func TestCreatePodRollsBackWhenCNIFails(t *testing.T) {
	r := newRig(t, rigOptions{cniFail: true})
	_, err := r.m.CreatePod(context.Background(), podConfig("cni-fails"))
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("CreatePod: %v, want the CNI plugin's failure", err)
	}
	r.noLeaks("CreatePod after CNI ADD failed")
}

func TestCreatePodRollsBackWhenSupervisorCannotStart(t *testing.T) {
	r := newRig(t, rigOptions{stage1: filepath.Join(t.TempDir(), "no-such-stage1")})
	if _, err := r.m.CreatePod(context.Background(), podConfig("no-stage1")); err == nil {
		t.Fatal("CreatePod without a supervisor binary succeeded")
	}
	r.noLeaks("CreatePod after the supervisor failed to start")
}

func TestCreatePodRollsBackWhenSupervisorExitsAtOnce(t *testing.T) {
	for name, script := range map[string]string{
		"silent":  "#!/bin/sh\nexit 3\n",
		"reports": "#!/bin/sh\necho 'cannot serve: injected' >&3\nexit 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			stage1 := filepath.Join(t.TempDir(), "stage1")
			if err := os.WriteFile(stage1, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			r := newRig(t, rigOptions{stage1: stage1})
			_, err := r.m.CreatePod(context.Background(), podConfig("stage1-exits"))
			if err == nil || !strings.Contains(err.Error(), "pod supervisor") {
				t.Fatalf("CreatePod: %v, want the supervisor's failure", err)
			}
			r.noLeaks("CreatePod after the supervisor exited")
		})
	}
}

// The real supervisor starts and never says it is ready (its ready fd is
// kept open elsewhere), so CreatePod's deadline passes and it kills the
// supervisor after it made everything it makes: with a shared pid
// namespace, the holder process and its pin too.
func TestCreatePodRollsBackWhenSupervisorIsKilledWhileStarting(t *testing.T) {
	for _, c := range []struct{ sharePID, userNS bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("sharePID=%v,userNS=%v", c.sharePID, c.userNS), func(t *testing.T) {
			real := stage1Binary(t)
			stage1 := filepath.Join(traversableTempDir(t), "stage1")
			// fd 4 keeps the ready pipe open; the supervisor reports to
			// /dev/null. Other uses of stage1 (the ns-holder of a pod with a
			// user namespace) go straight through.
			script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = supervise ]; then exec 4>&3; exec %q \"$@\" 3>/dev/null; fi\nexec %q \"$@\"\n", real, real)
			if err := os.WriteFile(stage1, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			r := newRig(t, rigOptions{stage1: stage1})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			cfg := podConfig("stage1-killed")
			cfg.SharePID = c.sharePID
			if c.userNS {
				ids := []specs.LinuxIDMapping{{HostID: 3 << 20, Size: 65536}}
				cfg.UserNS = &UserNSConfig{UIDMap: ids, GIDMap: ids}
			}
			if _, err := r.m.CreatePod(ctx, cfg); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("CreatePod: %v, want its deadline", err)
			}
			r.noLeaks("CreatePod after its supervisor was killed while starting")
		})
	}
}

// traversableTempDir is a t.TempDir that a pod's mapped root may search.
func traversableTempDir(t *testing.T) string {
	d := t.TempDir()
	os.Chmod(filepath.Dir(d), 0o755)
	os.Chmod(d, 0o755)
	return d
}

// readyPod makes a pod that works, for the AddApp failures.
func (r *rig) readyPod(name string) *Pod {
	r.t.Helper()
	p, err := r.m.CreatePod(context.Background(), podConfig(name))
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// appLeaks lists what a failed AddApp left of app id in pod p.
func (r *rig) appLeaks(p *Pod, id string) []string {
	var out []string
	if _, err := os.Lstat(r.l.AppDir(p.ID, id)); err == nil {
		out = append(out, "app dir "+r.l.AppDir(p.ID, id))
	}
	if _, err := os.Lstat(filepath.Join(r.l.StateRoot(), id)); err == nil {
		out = append(out, "libcontainer state "+filepath.Join(r.l.StateRoot(), id))
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, id) {
			out = append(out, "mount "+line)
		}
	}
	for _, mp := range hostcgroup.Mounts() {
		d := filepath.Join(mp, p.CgroupParent, id)
		if _, err := os.Stat(d); err == nil {
			out = append(out, "cgroup "+d)
		}
	}
	if apps, _ := r.l.ListApps(p.ID); len(apps) > 0 {
		out = append(out, fmt.Sprintf("%d app records", len(apps)))
	}
	return out
}

// addAppFails makes AddApp fail as mutate arranges, checks the app left
// nothing and the pod still takes an app, then removes the pod and checks
// the host.
func (r *rig) addAppFails(mutate func(p *Pod, cfg *AppConfig), wantErr string, opts ...SpecOpt) {
	r.t.Helper()
	p := r.readyPod("add-app-fails")
	cfg := AppConfig{ID: newID(), Name: "app", Image: r.busybox(), Spec: spec.App{Command: []string{"sleep", "60"}}}
	mutate(p, &cfg)
	_, err := r.m.AddApp(context.Background(), p.ID, cfg, opts...)
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		r.t.Fatalf("AddApp: %v, want an error with %q", err, wantErr)
	}
	r.t.Logf("AddApp failed as it should: %v", err)
	for _, l := range r.appLeaks(p, cfg.ID) {
		r.t.Errorf("failed AddApp left: %s", l)
	}
	if r.m.SupervisorAlive(context.Background(), p.ID) {
		// The same name can be added again once the failure is gone.
		ok := AppConfig{Name: "app", Image: r.busybox(), Spec: spec.App{Command: []string{"sleep", "60"}}}
		if _, err := r.m.AddApp(context.Background(), p.ID, ok); err != nil {
			r.t.Errorf("AddApp after a failed one: %v", err)
		}
	}
	if err := r.m.RemovePod(context.Background(), p.ID); err != nil {
		r.t.Fatalf("RemovePod: %v", err)
	}
	r.noLeaks("pod after a failed AddApp")
}

func TestAddAppRollsBackWhenLibcontainerCreateFails(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.addAppFails(func(_ *Pod, cfg *AppConfig) {
		// libcontainer's init cannot bind a source that is not there.
		cfg.Spec.Mounts = []spec.Mount{{HostPath: filepath.Join(t.TempDir(), "gone"), ContainerPath: "/data"}}
	}, "gone")
}

func TestAddAppRollsBackWhenTheBundleWriteFails(t *testing.T) {
	r := newRig(t, rigOptions{})
	orig := writeBundle
	defer func() { writeBundle = orig }()
	writeBundle = func(dir string, s *specs.Spec) error {
		writeBundle = orig                               // once
		if err := spec.WriteBundle(dir, s); err != nil { // half done: config.json is there
			return err
		}
		return errors.New("write bundle: injected failure")
	}
	r.addAppFails(func(*Pod, *AppConfig) {}, "injected failure")
}

// A SpecOpt (NRI's, in the daemon) edits the generated spec of the app
// being made, and what it writes is what the bundle holds.
func TestAddAppSpecOptsEditTheBundle(t *testing.T) {
	r := newRig(t, rigOptions{})
	p := r.readyPod("spec-opts")
	var saw string
	opt := func(a *App, s *specs.Spec) error {
		saw = a.ID + " " + strings.Join(s.Process.Args, " ")
		s.Process.Env = append(s.Process.Env, "FROM_OPT=1")
		return nil
	}
	a, err := r.m.AddApp(context.Background(), p.ID, AppConfig{Name: "app", Image: r.busybox(), Spec: spec.App{Command: []string{"sleep", "60"}}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	if saw != a.ID+" sleep 60" {
		t.Fatalf("the opt saw %q", saw)
	}
	s, err := spec.ReadBundle(r.l.Bundle(p.ID, a.ID))
	if err != nil || !slices.Contains(s.Process.Env, "FROM_OPT=1") {
		t.Fatalf("bundle env %v (%v)", s.Process.Env, err)
	}
	if err := r.m.RemovePod(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	r.noLeaks("pod with an app a SpecOpt edited")
}

func TestAddAppRollsBackWhenASpecOptFails(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.addAppFails(func(*Pod, *AppConfig) {}, "opt refused", func(*App, *specs.Spec) error { return errors.New("opt refused") })
}

func TestAddAppRollsBackWhenASpecOptBreaksTheSpec(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.addAppFails(func(*Pod, *AppConfig) {}, "not a valid OCI bundle", func(_ *App, s *specs.Spec) error {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "relative", Type: "bind", Source: "/tmp"})
		return nil
	})
}

func TestAddAppRollsBackWhenTheSpecCannotBeMade(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.addAppFails(func(_ *Pod, cfg *AppConfig) { cfg.Spec.User = "no-such-user" }, "no-such-user")
}

func TestAddAppRollsBackWhenTheLogDirCannotBeMade(t *testing.T) {
	r := newRig(t, rigOptions{})
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.addAppFails(func(_ *Pod, cfg *AppConfig) { cfg.LogPath = filepath.Join(file, "logs", "app.log") }, "not a directory")
}

func TestAddAppRollsBackWhenTheSupervisorIsGone(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.addAppFails(func(p *Pod, _ *AppConfig) { killSupervisor(r.t, r.l, p.ID) }, "")
}

// killSupervisor SIGKILLs the pod's supervisor (found by its run dir) and
// waits until its socket stops answering.
func killSupervisor(t *testing.T, l Layout, podID string) {
	t.Helper()
	es, _ := os.ReadDir("/proc")
	killed := false
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), "\x00supervise\x00") || !strings.Contains(string(b), l.RunDir(podID)+"\x00") {
			continue
		}
		var pid int
		fmt.Sscan(e.Name(), &pid)
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = true
		}
	}
	if !killed {
		t.Fatal("no supervisor process found to kill")
	}
	m := &Manager{l: l}
	for deadline := time.Now().Add(5 * time.Second); m.SupervisorAlive(context.Background(), podID); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the supervisor still answers after SIGKILL")
		}
	}
}

// kubelet gives up on a CreateContainer that takes long: AddApp's context
// ends while the supervisor is still creating the container (here a
// createRuntime hook makes that take 3 s). What the supervisor finishes
// afterwards must not be left behind.
func TestAddAppRollsBackWhenItsContextEndsDuringCreate(t *testing.T) {
	r := newRig(t, rigOptions{})
	orig := writeBundle
	defer func() { writeBundle = orig }()
	mark := filepath.Join(t.TempDir(), "hook-ran")
	writeBundle = func(dir string, s *specs.Spec) error {
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "touch " + mark + "; sleep 3"}}}}
		return orig(dir, s)
	}
	p := r.readyPod("slow-create")
	// Its context ends once the hook runs: the container is half made.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(mark); err == nil {
				break
			}
		}
		cancel(context.DeadlineExceeded)
	}()
	id := newID()
	_, err := r.m.AddApp(ctx, p.ID, AppConfig{ID: id, Name: "app", Image: r.busybox(), Spec: spec.App{Command: []string{"sleep", "60"}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("AddApp: %v, want its context's end", err)
	}
	time.Sleep(4 * time.Second) // the supervisor is done creating by now
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("the hook did not run: %v", err)
	}
	for _, l := range r.appLeaks(p, id) {
		t.Errorf("AddApp whose context ended left: %s", l)
	}
	var st struct {
		Apps []struct {
			Name string `json:"name"`
		} `json:"apps"`
	}
	if err := r.m.call(context.Background(), p.ID, "State", nil, &st); err != nil || len(st.Apps) != 0 {
		t.Errorf("the supervisor still has apps: %+v %v", st, err)
	}
	if err := r.m.RemovePod(context.Background(), p.ID); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	r.noLeaks("pod after an AddApp whose context ended")
}

// The supervisor dies while it creates the container (a createRuntime
// hook, which it runs itself, kills it): AddApp fails, and the half-made
// container (its libcontainer state, cgroup and init process) must not
// outlive the call.
func TestAddAppRollsBackWhenTheSupervisorDiesDuringCreate(t *testing.T) {
	r := newRig(t, rigOptions{})
	orig := writeBundle
	defer func() { writeBundle = orig }()
	writeBundle = func(dir string, s *specs.Spec) error {
		writeBundle = orig // once
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "kill -9 $PPID"}}}}
		return orig(dir, s)
	}
	p := r.readyPod("dies-in-create")
	id := newID()
	_, err := r.m.AddApp(context.Background(), p.ID, AppConfig{ID: id, Name: "app", Image: r.busybox(), Spec: spec.App{Command: []string{"sleep", "60"}}})
	if err == nil {
		t.Fatal("AddApp succeeded though its supervisor died")
	}
	t.Logf("AddApp failed as it should: %v", err)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		leaks := r.appLeaks(p, id)
		if len(leaks) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, l := range leaks {
				t.Errorf("AddApp whose supervisor died left: %s", l)
			}
			break
		}
	}
	if err := r.m.RemovePod(context.Background(), p.ID); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	r.noLeaks("pod whose supervisor died in AddApp")
}
