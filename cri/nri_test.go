package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// recorder is an NRI plugin (through NRI's own stub, over the daemon's
// socket) that records the events it gets and can block or fail them.
type recorder struct {
	mu     sync.Mutex
	events []string // "Event id" (the pod's or the container's)
	names  map[string]string
	synced chan struct{}
	once   sync.Once
	pods   []string // what Synchronize told
	ctrs   []string

	onRunPod  func(ctx context.Context, p *api.PodSandbox) error
	onStopPod func(ctx context.Context, p *api.PodSandbox) error
	onCreate  func(ctx context.Context, p *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, error)
}

func (r *recorder) record(event, id, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event+" "+id)
	if r.names == nil {
		r.names = map[string]string{}
	}
	if _, ok := r.names[id]; !ok {
		r.names[id] = name
	}
}

// seen returns the recorded events about id, in order.
func (r *recorder) seen(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if ev, eid, _ := strings.Cut(e, " "); eid == id {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor waits until the events about id are want.
func (r *recorder) waitFor(t *testing.T, id string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(r.seen(id), want) {
		if time.Now().After(deadline) {
			t.Fatalf("events of %s: got %v, want %v", id, r.seen(id), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *recorder) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	r.mu.Lock()
	for _, p := range pods {
		r.pods = append(r.pods, p.Id)
	}
	for _, c := range ctrs {
		r.ctrs = append(r.ctrs, c.Id)
	}
	r.mu.Unlock()
	r.once.Do(func() { close(r.synced) })
	return nil, nil
}

func (r *recorder) RunPodSandbox(ctx context.Context, p *api.PodSandbox) error {
	r.record("RunPodSandbox", p.Id, p.Namespace+"/"+p.Name+"/"+p.Uid)
	if r.onRunPod != nil {
		return r.onRunPod(ctx, p)
	}
	return nil
}

func (r *recorder) StopPodSandbox(ctx context.Context, p *api.PodSandbox) error {
	r.record("StopPodSandbox", p.Id, p.Name)
	if r.onStopPod != nil {
		return r.onStopPod(ctx, p)
	}
	return nil
}

func (r *recorder) RemovePodSandbox(_ context.Context, p *api.PodSandbox) error {
	r.record("RemovePodSandbox", p.Id, p.Name)
	return nil
}

func (r *recorder) CreateContainer(ctx context.Context, p *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	r.record("CreateContainer", c.Id, c.Name)
	if r.onCreate != nil {
		adj, err := r.onCreate(ctx, p, c)
		return adj, nil, err
	}
	return nil, nil, nil
}

func (r *recorder) PostCreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	r.record("PostCreateContainer", c.Id, c.Name)
	return nil
}

func (r *recorder) StartContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	r.record("StartContainer", c.Id, c.Name)
	return nil
}

func (r *recorder) PostStartContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	r.record("PostStartContainer", c.Id, c.Name)
	return nil
}

func (r *recorder) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	r.record("StopContainer", c.Id, c.Name)
	return nil, nil
}

func (r *recorder) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	r.record("RemoveContainer", c.Id, c.Name)
	return nil
}

// nriServer is a test server with NRI on a socket in a temp dir.
func nriServer(t *testing.T, f Runtime, edit ...func(*Options)) (*testServer, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nri.sock")
	edit = append([]func(*Options){func(o *Options) {
		o.NRI = &NRIOptions{SocketPath: sock, PluginPath: filepath.Join(t.TempDir(), "none"), RequestTimeout: 5 * time.Second}
	}}, edit...)
	return startServer(t, f, edit...), sock
}

// connect connects a recorder as plugin idx-name and waits for its
// Synchronize.
func connect(t *testing.T, sock, name, idx string, r *recorder) stub.Stub {
	t.Helper()
	r.synced = make(chan struct{})
	s, err := stub.New(r, stub.WithPluginName(name), stub.WithPluginIdx(idx), stub.WithSocketPath(sock))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-r.synced:
	case err := <-done:
		t.Fatalf("plugin %s: %v", name, err)
	case <-time.After(5 * time.Second):
		t.Fatalf("plugin %s was not synchronized", name)
	}
	return s
}

func nriSandbox(t *testing.T, name string) *runtimeapi.PodSandboxConfig {
	c := realSandboxConfig(t, name)
	c.Metadata.Uid = "uid-" + name
	return c
}

func TestNRILifecycleEventsInOrder(t *testing.T) {
	f := &spy{Adapter: newReal(t)}
	ts, sock := nriServer(t, f)
	r := &recorder{}
	connect(t, sock, "rec", "10", r)

	podID := ts.runPod(t, nriSandbox(t, "p1"))
	ctrID := ts.createCtr(t, podID, sleeperConfig("c1"))
	ctx := context.Background()
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctrID}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctrID, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctrID}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second stop sends nothing
		if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, ctrID, "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer", "StopContainer", "RemoveContainer")
	r.waitFor(t, podID, "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[podID] != "ns1/p1/uid-p1" || r.names[ctrID] != "c1" {
		t.Fatalf("metadata: %v", r.names)
	}
}

func TestNRISelfExitAndPodStopSendStopContainer(t *testing.T) {
	f := &spy{Adapter: newReal(t)}
	ts, sock := nriServer(t, f)
	r := &recorder{}
	connect(t, sock, "rec", "10", r)
	ctx := context.Background()

	podID := ts.runPod(t, nriSandbox(t, "p1"))
	ec := ctrConfig("exits", testImage)
	ec.Command = []string{"sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 1"}
	exits := ts.createCtr(t, podID, ec)
	runs := ts.createCtr(t, podID, sleeperConfig("runs"))
	for _, id := range []string{exits, runs} {
		if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	// It exits by itself (the exec lets it): the watcher sees it.
	if _, err := ts.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: exits, Cmd: []string{"touch", "/tmp/go"}, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, exits, "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer", "StopContainer")

	// While StopPodSandbox's event is being handled, every container has
	// exited and the pod is still there.
	var during []runtimeapi.ContainerState
	var statusErr error
	r.onStopPod = func(ctx context.Context, p *api.PodSandbox) error {
		l, err := ts.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: p.Id}})
		if err != nil {
			return err
		}
		for _, c := range l.Containers {
			during = append(during, c.State)
		}
		_, statusErr = ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.Id})
		return nil
	}
	if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if len(during) != 2 || during[0] != runtimeapi.ContainerState_CONTAINER_EXITED || during[1] != runtimeapi.ContainerState_CONTAINER_EXITED || statusErr != nil {
		t.Fatalf("during StopPodSandbox: containers %v, status %v", during, statusErr)
	}
	r.waitFor(t, runs, "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer", "StopContainer")
	r.waitFor(t, exits, "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer", "StopContainer")

	if _, err := ts.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, runs, "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer", "StopContainer", "RemoveContainer")
	r.waitFor(t, podID, "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox")
}

func TestNRIHookInProgressHidesSandbox(t *testing.T) {
	f := &spy{Adapter: newReal(t)}
	ts, sock := nriServer(t, f)
	reached, release := make(chan string), make(chan struct{})
	r := &recorder{onRunPod: func(_ context.Context, p *api.PodSandbox) error {
		reached <- p.Id
		<-release
		return nil
	}}
	connect(t, sock, "rec", "10", r)
	ctx := context.Background()

	type result struct {
		id  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: nriSandbox(t, "p1")})
		done <- result{resp.GetPodSandboxId(), err}
	}()
	id := <-reached
	l, err := ts.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(l.Items) != 0 {
		t.Fatalf("listed while its RunPodSandbox hook runs: %v %v", l, err)
	}
	_, err = ts.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: id, Config: ctrConfig("c", testImage)})
	wantCode(t, err, codes.NotFound)
	close(release)
	res := <-done
	if res.err != nil || res.id != id {
		t.Fatalf("RunPodSandbox: %q %v (hook saw %s)", res.id, res.err, id)
	}
	ts.createCtr(t, id, ctrConfig("c", testImage))
}

func TestNRIHookErrorsRollBack(t *testing.T) {
	f := &spy{Adapter: newReal(t)}
	ts, sock := nriServer(t, f)
	var failPod, failCtr sync.Once
	r := &recorder{
		onRunPod: func(context.Context, *api.PodSandbox) error {
			err := error(nil)
			failPod.Do(func() { err = errors.New("no pods today") })
			return err
		},
		onCreate: func(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, error) {
			err := error(nil)
			failCtr.Do(func() { err = errors.New("no containers today") })
			return nil, err
		},
	}
	connect(t, sock, "rec", "10", r)
	ctx := context.Background()

	_, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: nriSandbox(t, "p1")})
	if err == nil || !strings.Contains(err.Error(), "no pods today") {
		t.Fatalf("RunPodSandbox with a failing hook: %v", err)
	}
	if pods, err := f.ListPods(); f.called("RemovePod") != 1 || err != nil || len(pods) != 0 {
		t.Fatalf("failed pod not removed: %d RemovePod, pods %v (%v)", f.called("RemovePod"), pods, err)
	}
	podID := ts.runPod(t, nriSandbox(t, "p1")) // the same metadata again

	_, err = ts.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("c1", testImage)})
	if err == nil || !strings.Contains(err.Error(), "no containers today") {
		t.Fatalf("CreateContainer with a failing hook: %v", err)
	}
	l, _ := ts.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if apps := podApps(t, f.Adapter, podID); len(l.GetContainers()) != 0 || len(apps) != 0 {
		t.Fatalf("failed container left: %v, apps %v", l.GetContainers(), apps)
	}
	ctrID := ts.createCtr(t, podID, sleeperConfig("c1"))
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctrID}); err != nil {
		t.Fatal(err)
	}
	for _, e := range r.events {
		if strings.HasPrefix(e, "StartContainer ") && !strings.HasSuffix(e, ctrID) {
			t.Fatalf("a container whose creation failed was started: %v", r.events)
		}
	}
}

func TestNRISynchronizeLatePlugin(t *testing.T) {
	f := &spy{Adapter: newReal(t)}
	ts, sock := nriServer(t, f)
	podID := ts.runPod(t, nriSandbox(t, "p1"))
	ctrID := ts.createCtr(t, podID, ctrConfig("c1", testImage))

	r := &recorder{}
	connect(t, sock, "late", "20", r)
	if !slices.Contains(r.pods, podID) || !slices.Contains(r.ctrs, ctrID) {
		t.Fatalf("Synchronize told pods %v, containers %v", r.pods, r.ctrs)
	}
	ctr2 := ts.createCtr(t, podID, ctrConfig("c2", testImage))
	r.waitFor(t, ctr2, "CreateContainer", "PostCreateContainer")
}

func TestNRIAdjustmentsBeforeCreate(t *testing.T) {
	a := newReal(t)
	importImageWith(t, a, "example.com/nri:1", func(c *v1.Config) {
		c.Env = []string{"PATH=/bin", "IMAGE=1"}
		c.Cmd = []string{"sh"}
	})
	srvData, srvOld := t.TempDir(), t.TempDir()
	ts, sock := nriServer(t, a)
	var seen *api.Container
	adjust := func(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, error) {
		seen = c
		adj := &api.ContainerAdjustment{}
		adj.AddAnnotation("nri.example/a", "1")
		adj.AddEnv("FROM_NRI", "yes")
		adj.RemoveEnv("GONE")
		adj.RemoveEnv("IMAGE")
		adj.AddMount(&api.Mount{Destination: "/data", Source: srvData, Type: "bind", Options: []string{"rbind", "ro", "rslave"}})
		adj.RemoveMount("/old")
		adj.SetArgs([]string{"/bin/sh", "--flag"})
		adj.AddRlimit("RLIMIT_NOFILE", 2048, 1024)
		adj.AddDevice(&api.LinuxDevice{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229})
		adj.SetLinuxCPUSetCPUs("1")
		adj.SetLinuxMemoryLimit(64 << 20)
		adj.SetLinuxOomScoreAdj(api.Int(500).Get())
		return adj, nil
	}
	r := &recorder{onCreate: adjust}
	connect(t, sock, "rec", "10", r)
	podID := ts.runPod(t, nriSandbox(t, "p1"))

	cfg := ctrConfig("c1", "example.com/nri:1")
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "GONE", Value: []byte("x")}, {Key: "KEEP", Value: []byte("y")}}
	cfg.Mounts = []*runtimeapi.Mount{{HostPath: srvOld, ContainerPath: "/old"}}
	ctrID := ts.createCtr(t, podID, cfg)

	// The plugin was told the generated spec: the app's id, command and
	// its whole environment (the image's, the request's and runclet's).
	sp, err := a.AppSpec(podID, ctrID)
	if err != nil {
		t.Fatal(err)
	}
	told := slices.DeleteFunc(slices.Clone(seen.Env), func(kv string) bool { return kv == "GONE=x" || kv == "IMAGE=1" })
	if seen.Id != ctrID || seen.PodSandboxId != podID || !slices.Equal(seen.Args, []string{"sh"}) ||
		!slices.Contains(seen.Env, "PATH=/bin") || !slices.Contains(seen.Env, "IMAGE=1") || !slices.Contains(seen.Env, "GONE=x") ||
		!slices.Equal(append(told, "FROM_NRI=yes"), sp.Process.Env) || !slices.ContainsFunc(seen.Mounts, func(m *api.Mount) bool { return m.Destination == "/old" }) {
		t.Fatalf("plugin was told %v; the app got env %v", seen, sp.Process.Env)
	}
	if sp.Annotations["nri.example/a"] != "1" || !slices.Contains(sp.Process.Env, "KEEP=y") || slices.Contains(sp.Process.Env, "GONE=x") ||
		!slices.Equal(sp.Process.Args, []string{"/bin/sh", "--flag"}) {
		t.Fatalf("adjusted spec: annotations %v env %v args %v", sp.Annotations, sp.Process.Env, sp.Process.Args)
	}
	var data *specs.Mount
	for i, m := range sp.Mounts {
		if m.Destination == "/old" {
			t.Fatalf("removed mount still there: %+v", m)
		}
		if m.Destination == "/data" {
			data = &sp.Mounts[i]
		}
	}
	if data == nil || data.Source != srvData || !slices.Contains(data.Options, "ro") || sp.Linux.RootfsPropagation != "rslave" {
		t.Fatalf("adjusted mounts: %+v, rootfs propagation %q", sp.Mounts, sp.Linux.RootfsPropagation)
	}
	var nofile []specs.POSIXRlimit
	for _, rl := range sp.Process.Rlimits {
		if rl.Type == "RLIMIT_NOFILE" {
			nofile = append(nofile, rl)
		}
	}
	if len(nofile) != 1 || nofile[0] != (specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: 2048, Soft: 1024}) {
		t.Fatalf("adjusted rlimits: %+v", sp.Process.Rlimits)
	}
	res := sp.Linux.Resources
	if !slices.ContainsFunc(sp.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/fuse" && d.Major == 10 && d.Minor == 229 }) ||
		!slices.ContainsFunc(res.Devices, func(d specs.LinuxDeviceCgroup) bool {
			return d.Allow && d.Major != nil && *d.Major == 10 && *d.Minor == 229 && d.Access == "rwm"
		}) {
		t.Fatalf("adjusted devices: %+v, rules %+v", sp.Linux.Devices, res.Devices)
	}
	if res.CPU.Cpus != "1" || *res.Memory.Limit != 64<<20 || *res.Memory.Swap != 64<<20 || sp.Process.OOMScoreAdj == nil || *sp.Process.OOMScoreAdj != 500 {
		t.Fatalf("adjusted resources: %+v %+v, oom_score_adj %v", res.CPU, res.Memory, sp.Process.OOMScoreAdj)
	}

	// What runclet cannot apply fails the creation, names it, and leaves
	// nothing: plugins hear the container is gone again.
	var refused string
	r.onCreate = func(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, error) {
		refused = c.Id
		adj := &api.ContainerAdjustment{}
		adj.AddHooks(&api.Hooks{Prestart: []*api.Hook{{Path: "/bin/true"}}})
		adj.SetLinuxRDTClass("gold")
		return adj, nil
	}
	_, err = ts.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("c2", "example.com/nri:1")})
	wantCode(t, err, codes.Unimplemented)
	if !strings.Contains(err.Error(), "hooks") || !strings.Contains(err.Error(), "linux.resources.rdt_class") {
		t.Fatalf("error does not name the adjustments: %v", err)
	}
	if apps := podApps(t, a, podID); len(apps) != 1 {
		t.Fatalf("the refused container was made: apps %v", apps)
	}
	r.waitFor(t, refused, "CreateContainer", "StopContainer", "RemoveContainer")
}

func TestNRIUnsolicitedUpdate(t *testing.T) {
	f := &spy{Adapter: newReal(t)}
	ts, sock := nriServer(t, f)
	r := &recorder{}
	s := connect(t, sock, "rec", "10", r)
	podID := ts.runPod(t, nriSandbox(t, "p1"))
	ctrID := ts.createCtr(t, podID, ctrConfig("c1", testImage))

	u := &api.ContainerUpdate{ContainerId: ctrID}
	u.SetLinuxCPUSetCPUs("1")
	u.SetLinuxMemoryLimit(32 << 20)
	failed, err := s.UpdateContainers([]*api.ContainerUpdate{u})
	if err != nil || len(failed) != 0 {
		t.Fatalf("update: failed %v, %v", failed, err)
	}
	if sp, err := f.AppSpec(podID, ctrID); err != nil || sp.Linux.Resources.CPU.Cpus != "1" || *sp.Linux.Resources.Memory.Limit != 32<<20 {
		t.Fatalf("applied %+v (%v)", sp.Linux.Resources, err)
	}
	st, err := ts.rt.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: ctrID})
	if err != nil || st.Status.Resources.GetLinux().GetCpusetCpus() != "1" {
		t.Fatalf("status after an NRI update: %v %v", st, err)
	}

	bad := &api.ContainerUpdate{ContainerId: ctrID}
	bad.SetLinuxBlockIOClass("slow")
	if failed, err := s.UpdateContainers([]*api.ContainerUpdate{bad}); len(failed) != 1 || err != nil {
		t.Fatalf("unsupported update: failed %v, %v", failed, err)
	}
}

func TestAdjustSpecRemovals(t *testing.T) {
	major, minor := int64(10), int64(229)
	sp := &specs.Spec{
		Process:     &specs.Process{Env: []string{"PATH=/bin", "A=1", "B=2"}},
		Annotations: map[string]string{"x": "1", "y": "2"},
		Mounts:      []specs.Mount{{Source: "/a", Destination: "/a"}, {Source: "/b", Destination: "/b"}},
		Linux: &specs.Linux{
			Devices:   []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229}},
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"}}},
			Sysctl:    map[string]string{"net.x": "1"},
		},
	}
	adj := &api.ContainerAdjustment{
		Annotations: map[string]string{"-x": "", "z": "3"},
		Env:         []*api.KeyValue{{Key: "C", Value: "3"}, {Key: "-PATH"}},
		Mounts:      []*api.Mount{{Destination: "-/a"}},
		Linux:       &api.LinuxContainerAdjustment{Sysctl: map[string]string{"net.y": "2"}},
	}
	// NRI's merged adjustment says nothing of these removals: they are
	// found by comparing the container before and after.
	rm := nriRemoved{env: []string{"A"}, devices: []string{"/dev/fuse"}, sysctls: []string{"net.x"}}
	if err := adjustSpec(sp, adj, rm, false); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sp.Annotations) != "map[y:2 z:3]" || !slices.Equal(sp.Process.Env, []string{"B=2", "C=3"}) ||
		len(sp.Mounts) != 1 || sp.Mounts[0].Destination != "/b" || len(sp.Linux.Devices) != 0 || len(sp.Linux.Resources.Devices) != 0 ||
		fmt.Sprint(sp.Linux.Sysctl) != "map[net.y:2]" {
		t.Fatalf("after removals: %+v %+v", sp, sp.Linux)
	}
}

// NRI binds its socket with the umask's mode: the socket's directory is
// made root's alone before (even one that existed 0755) and the socket
// ends up 0600.
func TestNRISocketPrivate(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	dir := filepath.Join(t.TempDir(), "nri")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nri.sock")
	startServer(t, newReal(t), func(o *Options) {
		o.NRI = &NRIOptions{SocketPath: sock, PluginPath: filepath.Join(t.TempDir(), "none"), RequestTimeout: 5 * time.Second}
	})
	for path, want := range map[string]os.FileMode{dir: 0o700, sock: 0o600} {
		st, err := os.Lstat(path)
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (%v)", path, st.Mode().Perm(), want, err)
		}
	}
}
