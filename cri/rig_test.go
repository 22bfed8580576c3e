package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// The handler tests run against the real runtime: an Adapter over a
// pod.Manager, image store and network manager of their own, under a
// temporary root, with the stage1-runc binary built as shipped. Pods are
// real pods (supervisor, namespaces, cgroups, overlayfs, CNI), so the
// tests need root.

var stage1Once struct {
	sync.Once
	path string
	err  error
}

// testLogRoot stands for /var/log/pods in the tests: real apps write
// their logs under their pod's log directory.
var testLogRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runclet-cri-logs-")
	if err != nil {
		panic(err)
	}
	testLogRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	if stage1Once.path != "" {
		os.RemoveAll(filepath.Dir(stage1Once.path))
	}
	os.Exit(code)
}

// stage1Binary builds stage1-runc once per test binary.
func stage1Binary(t *testing.T) string {
	t.Helper()
	stage1Once.Do(func() {
		dir, err := os.MkdirTemp("", "runclet-cri-test-")
		if err != nil {
			stage1Once.err = err
			return
		}
		os.Chmod(dir, 0o755)
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

// testImage is the busybox test image under the name the tests use.
const testImage = "example.com/app:1"

// newReal makes a real runtime under a temporary root, with its own
// bridge and subnet, and the busybox test image imported as testImage.
// Cleanup removes every pod it still has, its mounts and its bridge.
func newReal(t *testing.T) *Adapter { return newRealWith(t, image.Options{}) }

// newRealWith is newReal with its image store opened with opts.
func newRealWith(t *testing.T, imgOpts image.Options) *Adapter {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the CRI handlers are tested over real pods (namespaces, overlayfs, cgroups, CNI)")
	}
	stage1 := stage1Binary(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // a user-namespaced pod's root must reach its rootfs
	root, runRoot := filepath.Join(dir, "data"), filepath.Join(dir, "run")
	b := make([]byte, 3)
	rand.Read(b)
	bridge := "rclcri" + hex.EncodeToString(b)[:5]
	netm, err := network.New(network.Config{
		ConfDir: filepath.Join(dir, "no-cni-configs"), CacheDir: filepath.Join(root, "cni", "cache"),
		IPAMDataDir: filepath.Join(root, "cni", "networks"), DefaultBridge: bridge, DefaultSubnet: freeSubnet(t, int(b[0])),
		StateDir: filepath.Join(root, "cni"),
	})
	if err != nil {
		t.Fatal(err)
	}
	images, err := image.Open(root, imgOpts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pod.New(pod.Options{Layout: pod.Layout{Root: root, RunRoot: runRoot}, Images: images, Network: netm, Stage1Path: stage1})
	if err != nil {
		t.Fatal(err)
	}
	a := &Adapter{Manager: m, Images: images, Network: netm}
	t.Cleanup(func() {
		if pods, err := m.ListPods(); err == nil {
			for _, p := range pods {
				m.RemovePod(context.Background(), p.ID)
			}
		}
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && (strings.HasPrefix(f[4], root) || strings.HasPrefix(f[4], runRoot)) {
				syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
		exec.Command("ip", "link", "del", bridge).Run()
	})
	importImage(t, a, testImage)
	return a
}

var busyboxOnce struct {
	sync.Once
	img v1.Image
	err error
}

// importImage imports the busybox test image into a's store as ref.
func importImage(t *testing.T, a *Adapter, ref string) { importImageWith(t, a, ref, nil) }

// busybox is the busybox test image.
func busybox(t *testing.T) v1.Image {
	t.Helper()
	busyboxOnce.Do(func() { busyboxOnce.img, busyboxOnce.err = testimage.Busybox() })
	if busyboxOnce.err != nil {
		t.Fatal(busyboxOnce.err)
	}
	return busyboxOnce.img
}

// importImageWith imports the busybox test image, its config edited by
// edit (if not nil), into a's store as ref.
func importImageWith(t *testing.T, a *Adapter, ref string, edit func(*v1.Config)) {
	t.Helper()
	busyboxOnce.Do(func() { busyboxOnce.img, busyboxOnce.err = testimage.Busybox() })
	if busyboxOnce.err != nil {
		t.Fatal(busyboxOnce.err)
	}
	img := busyboxOnce.img
	if edit != nil {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cfg := *cf.Config.DeepCopy()
		edit(&cfg)
		if img, err = mutate.Config(img, cfg); err != nil {
			t.Fatal(err)
		}
	}
	tar := filepath.Join(t.TempDir(), "busybox.tar")
	if err := testimage.WriteOCIArchive(tar, map[string]v1.Image{ref: img}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(tar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := a.Images.Import(context.Background(), f, nil); err != nil {
		t.Fatal(err)
	}
}

// freeSubnet picks a 10.222.N.0/24 no address of this host is in.
func freeSubnet(t *testing.T, seed int) string {
	out, _ := exec.Command("ip", "-o", "addr").CombinedOutput()
	for i := 0; i < 250; i++ {
		n := (seed + i*7) % 250
		if !strings.Contains(string(out), fmt.Sprintf(" 10.222.%d.", n)) {
			return fmt.Sprintf("10.222.%d.0/24", n)
		}
	}
	t.Fatal("no free 10.222.N.0/24")
	return ""
}

// testServer is a Server over the real runtime (or a spy on it), served on an in-memory connection
// through the real gRPC stack (interceptors included).
type testServer struct {
	*Server
	src *stubStats // the stats tests' numbers (statsFixture)
	rt  runtimeapi.RuntimeServiceClient
	img runtimeapi.ImageServiceClient
}

func startServer(t *testing.T, f Runtime, edit ...func(*Options)) *testServer {
	t.Helper()
	opts := Options{Runtime: f, Version: "1.2.3", CgroupDriver: "systemd", StreamAddress: "127.0.0.1:0", ResyncInterval: 0,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, e := range edit {
		e(&opts)
	}
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ln := bufconn.Listen(1 << 20)
	go s.Serve(ln)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop(time.Second)
	})
	return &testServer{Server: s, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn)}
}

// realSandboxConfig is sandboxConfig with the pod's log directory in a
// temporary directory (real pods write their logs there).
func realSandboxConfig(t *testing.T, name string) *runtimeapi.PodSandboxConfig {
	c := sandboxConfig(name)
	c.LogDirectory = filepath.Join(t.TempDir(), "ns1_"+name)
	return c
}

// sleeperConfig is a container of testImage that runs until stopped.
func sleeperConfig(name string) *runtimeapi.ContainerConfig {
	c := ctrConfig(name, testImage)
	c.Command = []string{"sleep", "3600"}
	return c
}

// podApps are the apps a pod has on disk.
func podApps(t *testing.T, a *Adapter, podID string) []*pod.App {
	t.Helper()
	_, apps, err := a.PodStatus(context.Background(), podID)
	if err != nil {
		t.Fatal(err)
	}
	return apps
}

// spy is the real runtime, noting what the handlers asked of it: how
// often each call was made and the last pod and app configurations, so
// that a test can tell a refused request never reached the runtime and
// that a request was mapped as it should be.
type spy struct {
	*Adapter
	mu      sync.Mutex
	calls   map[string]int
	lastPod pod.PodConfig
	lastApp pod.AppConfig
	execCfg pod.ExecConfig
	// lastAuth is the credentials of the last PullImage.
	lastAuth *authn.AuthConfig

	// createPod, if set, runs inside CreatePod with its context.
	createPod func(ctx context.Context)

	// appArmor, if set, is what Features says of AppArmor, whatever the
	// host has; AddApp then drops the app's AppArmor profile before the
	// real runtime (which cannot apply a profile the host does not have),
	// after noting it in lastApp. Set it before startServer.
	appArmor *bool
}

func (s *spy) Features() Features {
	f := s.Adapter.Features()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appArmor != nil {
		f.AppArmor = *s.appArmor
	}
	return f
}

func newSpy(t *testing.T) *spy { return &spy{Adapter: newReal(t)} }

func (s *spy) count(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[name]++
}

func (s *spy) called(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[name]
}

func (s *spy) CreatePod(ctx context.Context, cfg pod.PodConfig) (*pod.Pod, error) {
	s.count("CreatePod")
	s.mu.Lock()
	s.lastPod = cfg
	hook := s.createPod
	s.mu.Unlock()
	if hook != nil {
		hook(ctx)
	}
	return s.Adapter.CreatePod(ctx, cfg)
}

// RemovePod is counted once done, so a test waiting for it sees its end.
func (s *spy) RemovePod(ctx context.Context, podID string) error {
	defer s.count("RemovePod")
	return s.Adapter.RemovePod(ctx, podID)
}

func (s *spy) AddApp(ctx context.Context, podID string, cfg pod.AppConfig, opts ...pod.SpecOpt) (*pod.App, error) {
	s.count("AddApp")
	s.mu.Lock()
	s.lastApp = cfg
	if s.appArmor != nil {
		cfg.Spec.ApparmorProfile = ""
	}
	s.mu.Unlock()
	return s.Adapter.AddApp(ctx, podID, cfg, opts...)
}

func (s *spy) UpdateApp(ctx context.Context, podID, appID string, r spec.Resources) (*pod.App, error) {
	s.count("UpdateApp")
	return s.Adapter.UpdateApp(ctx, podID, appID, r)
}

func (s *spy) StopApp(ctx context.Context, podID, appID string, timeout time.Duration) (*pod.App, error) {
	s.count("StopApp")
	return s.Adapter.StopApp(ctx, podID, appID, timeout)
}

func (s *spy) RemoveApp(ctx context.Context, podID, appID string) error {
	s.count("RemoveApp")
	return s.Adapter.RemoveApp(ctx, podID, appID)
}

func (s *spy) StartApp(ctx context.Context, podID, appID string) (*pod.App, error) {
	s.count("StartApp")
	return s.Adapter.StartApp(ctx, podID, appID)
}

// addImage imports the busybox test image as ref, its USER set to user,
// and returns it as the store has it.
func (s *spy) addImage(t *testing.T, ref, user string) image.Image {
	t.Helper()
	importImageWith(t, s.Adapter, ref, func(c *v1.Config) {
		c.User = user
		c.Cmd = []string{"sh"}
	})
	img, err := s.GetImage(ref)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func (s *spy) Exec(ctx context.Context, podID, appID string, cfg pod.ExecConfig, st pod.Streams) (int, error) {
	s.count("Exec")
	s.mu.Lock()
	s.execCfg = cfg
	s.mu.Unlock()
	return s.Adapter.Exec(ctx, podID, appID, cfg, st)
}

// lastExec is the configuration of the last exec.
func (s *spy) lastExec() pod.ExecConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.execCfg
}

func (s *spy) PullImage(ctx context.Context, ref string, auth *authn.AuthConfig) (image.Image, error) {
	s.count("PullImage")
	s.mu.Lock()
	s.lastAuth = auth
	s.mu.Unlock()
	return s.Adapter.PullImage(ctx, ref, auth)
}

func (s *spy) ImageConfig(img image.Image) (*ocispec.Image, error) {
	s.count("ImageConfig")
	return s.Adapter.ImageConfig(img)
}

func (s *spy) RemoveImage(id string) error {
	s.count("RemoveImage:" + id)
	return s.Adapter.RemoveImage(id)
}

func (s *spy) ReopenLog(ctx context.Context, podID, appID string) error {
	s.count("ReopenLog")
	return s.Adapter.ReopenLog(ctx, podID, appID)
}

// mustImageID is the ID of testImage in a's store.
func (a *Adapter) mustImageID(t *testing.T) string {
	t.Helper()
	img, err := a.GetImage(testImage)
	if err != nil {
		t.Fatal(err)
	}
	return img.ID.String()
}

// mutateOrFail is img with its config edited by edit.
func mutateOrFail(t *testing.T, img v1.Image, edit func(*v1.Config)) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := *cf.Config.DeepCopy()
	edit(&cfg)
	out, err := mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
