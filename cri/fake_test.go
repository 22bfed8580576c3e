package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// fakeRuntime is an in-memory Runtime. App directories are real (under a
// temp dir) so the inotify watcher sees the exit files the fake writes.
type fakeRuntime struct {
	t   *testing.T
	dir string

	mu       sync.Mutex
	pods     map[string]*pod.Pod
	apps     map[string]*pod.App
	images   []image.Image
	configs  map[digest.Digest]*ocispec.Image
	registry map[string]image.Image // what PullImage can fetch, by ref
	features Features

	lastApp  pod.AppConfig
	lastAuth *authn.AuthConfig
	calls    []string

	// stats and updates
	appStats   map[string]pod.AppStats
	podStats   map[string]*pod.PodStats
	statsErr   map[string]error
	statsCalls []string
	fsUsage    map[string]pod.FsUsage
	resources  map[string]*specs.LinuxResources
	specs      map[string]*specs.Spec // generated for AddApp's SpecOpts

	// hooks
}

func newFake(t *testing.T) *fakeRuntime {
	return &fakeRuntime{
		t: t, dir: t.TempDir(), pods: map[string]*pod.Pod{}, apps: map[string]*pod.App{},
		configs: map[digest.Digest]*ocispec.Image{}, registry: map[string]image.Image{},
		appStats: map[string]pod.AppStats{}, podStats: map[string]*pod.PodStats{}, statsErr: map[string]error{},
		fsUsage: map[string]pod.FsUsage{}, resources: map[string]*specs.LinuxResources{}, specs: map[string]*specs.Spec{},
		features: Features{RecursiveReadOnlyMounts: true, SwapLimit: true, Hugetlb: true},
	}
}

func fakeID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (f *fakeRuntime) call(name string) {
	f.calls = append(f.calls, name)
}

func (f *fakeRuntime) called(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == name {
			n++
		}
	}
	return n
}

// addImage stores an image with a config whose USER is user.
func (f *fakeRuntime) addImage(tag, user string) image.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := digest.FromString(tag + user)
	img := image.Image{ID: id, RepoTags: []string{tag}, RepoDigests: []string{"example.com/x@" + digest.FromString(tag).String()}, Size: 1234}
	if !slices.ContainsFunc(f.images, func(i image.Image) bool { return i.ID == id }) {
		f.images = append(f.images, img)
	}
	f.configs[id] = &ocispec.Image{Config: ocispec.ImageConfig{User: user, Cmd: []string{"sh"}}}
	return img
}

func (f *fakeRuntime) CreatePod(ctx context.Context, cfg pod.PodConfig) (*pod.Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("CreatePod")
	if cfg.Flavor != pod.FlavorRunc && cfg.Flavor != pod.FlavorFly {
		return nil, errdefs.InvalidArgument("unknown flavor %q", cfg.Flavor)
	}
	p := &pod.Pod{
		ID: fakeID(), Name: cfg.Name, Namespace: cfg.Namespace, UID: cfg.UID, Attempt: cfg.Attempt, Hostname: cfg.Hostname,
		Flavor: cfg.Flavor, Labels: cfg.Labels, Annotations: cfg.Annotations, CreatedAt: time.Now(), State: pod.PodReady,
		HostNetwork: cfg.HostNetwork || cfg.Flavor == pod.FlavorFly, HostPID: cfg.HostPID || cfg.Flavor == pod.FlavorFly,
		HostIPC: cfg.HostIPC || cfg.Flavor == pod.FlavorFly, LogDirectory: cfg.LogDirectory, Ports: cfg.Ports,
	}
	if !p.HostNetwork {
		p.NetNS = "/run/netns/" + p.ID
		p.Attachment = &network.Attachment{IPs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/24"), netip.MustParsePrefix("fd00::3/64")}}
	}
	// The daemon watches the pod's directory, and forgets a pod whose
	// directory is gone.
	if err := os.MkdirAll(f.PodDir(p.ID), 0o755); err != nil {
		return nil, err
	}
	f.pods[p.ID] = p
	cp := *p
	return &cp, nil
}

func (f *fakeRuntime) StopPod(ctx context.Context, podID string, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("StopPod")
	p, ok := f.pods[podID]
	if !ok {
		return errdefs.NotFound("pod %s not found", podID)
	}
	for _, a := range f.apps {
		if a.PodID == podID && a.State != pod.AppExited {
			f.exitLocked(a, 137, "Error")
		}
	}
	p.State = pod.PodStopped
	return nil
}

func (f *fakeRuntime) RemovePod(ctx context.Context, podID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("RemovePod")
	if _, ok := f.pods[podID]; !ok {
		return errdefs.NotFound("pod %s not found", podID)
	}
	delete(f.pods, podID)
	for id, a := range f.apps {
		if a.PodID == podID {
			delete(f.apps, id)
		}
	}
	return os.RemoveAll(filepath.Join(f.dir, podID))
}

func (f *fakeRuntime) PodPids(string) (int, int) { return 0, 0 }

func (f *fakeRuntime) PodStatus(ctx context.Context, podID string) (*pod.Pod, []*pod.App, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pods[podID]
	if !ok {
		return nil, nil, errdefs.NotFound("pod %s not found", podID)
	}
	cp := *p
	var apps []*pod.App
	for _, a := range f.apps {
		if a.PodID == podID {
			ca := *a
			apps = append(apps, &ca)
		}
	}
	slices.SortFunc(apps, func(a, b *pod.App) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return &cp, apps, nil
}

func (f *fakeRuntime) ListPods() ([]*pod.Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pod.Pod
	for _, p := range f.pods {
		cp := *p
		out = append(out, &cp)
	}
	return out, nil
}

func (f *fakeRuntime) GCPreparing(ctx context.Context) (pod.GCResult, error) {
	var pods []string
	f.mu.Lock()
	for id, p := range f.pods {
		if p.State == pod.PodPreparing {
			pods = append(pods, id)
		}
	}
	f.mu.Unlock()
	var out []string
	for _, id := range pods {
		if err := f.RemovePod(ctx, id); err == nil {
			out = append(out, id)
		}
	}
	return pod.GCResult{Pods: out}, nil
}

func (f *fakeRuntime) PodStats(ctx context.Context, p *pod.Pod) (*pod.PodStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("PodStats")
	st, ok := f.podStats[p.ID]
	if !ok {
		return nil, errdefs.NotFound("no stats for pod %s", p.ID)
	}
	cp := *st
	return &cp, nil
}

func (f *fakeRuntime) AddApp(ctx context.Context, podID string, cfg pod.AppConfig, opts ...pod.SpecOpt) (*pod.App, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("AddApp")
	f.lastApp = cfg
	p, ok := f.pods[podID]
	if !ok {
		return nil, errdefs.NotFound("pod %s not found", podID)
	}
	if p.State != pod.PodReady {
		return nil, errdefs.FailedPrecondition("pod %s is %s", podID, p.State)
	}
	for _, a := range f.apps {
		if a.PodID == podID && a.Name == cfg.Name && a.Attempt == cfg.Attempt {
			return nil, errdefs.AlreadyExists("app %q exists", cfg.Name)
		}
	}
	img, err := f.getImageLocked(cfg.Image)
	if err != nil {
		return nil, err
	}
	id := cfg.ID
	if id == "" {
		id = fakeID()
	}
	a := &pod.App{
		ID: id, PodID: podID, Name: cfg.Name, Attempt: cfg.Attempt, Image: cfg.Image, ImageID: img.ID,
		ImageRef: img.RepoDigests[0], Labels: cfg.Labels, Annotations: cfg.Annotations, LogPath: cfg.LogPath,
		Tty: cfg.Tty, Stdin: cfg.Stdin, StdinOnce: cfg.StdinOnce, Mounts: cfg.Spec.Mounts, State: pod.AppCreated,
		CreatedAt: time.Now(), StopSignal: "SIGQUIT",
	}
	if len(opts) > 0 {
		// The real spec, as pod.Manager generates it, for opts to edit.
		app := cfg.Spec
		app.Name, app.ID, app.RootfsPath = cfg.Name, a.ID, "/rootfs"
		noFiles := func(string) ([]byte, error) { return nil, os.ErrNotExist }
		sp, err := spec.Generate(f.configs[img.ID].Config, noFiles, app, spec.Pod{ID: podID, Name: p.Name}, spec.FlavorRunc)
		if err != nil {
			return nil, err
		}
		for _, opt := range opts {
			if err := opt(a, sp); err != nil {
				return nil, err
			}
		}
		f.specs[a.ID] = sp
	}
	if err := os.MkdirAll(f.AppDir(podID, a.ID), 0o755); err != nil {
		return nil, err
	}
	f.apps[a.ID] = a
	ca := *a
	return &ca, nil
}

func (f *fakeRuntime) StartApp(ctx context.Context, podID, appID string) (*pod.App, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("StartApp")
	a, ok := f.apps[appID]
	if !ok || a.PodID != podID {
		return nil, errdefs.NotFound("app %s not found", appID)
	}
	if a.State != pod.AppCreated {
		return nil, errdefs.FailedPrecondition("app %s is %s", appID, a.State)
	}
	a.State, a.StartedAt, a.Pid = pod.AppRunning, time.Now(), 4242
	ca := *a
	return &ca, nil
}

// exitLocked records an exit as the supervisor would: the record and
// exit.json in the app's directory (the watcher's cue).
func (f *fakeRuntime) exitLocked(a *pod.App, code int, reason string) {
	a.State, a.ExitCode, a.Reason, a.FinishedAt, a.Pid = pod.AppExited, code, reason, time.Now(), 0
	b, _ := json.Marshal(proto.ExitStatus{ExitCode: code, Reason: reason, ExitedAt: a.FinishedAt})
	tmp := filepath.Join(f.AppDir(a.PodID, a.ID), ".exit.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		os.Rename(tmp, filepath.Join(f.AppDir(a.PodID, a.ID), "exit.json"))
	}
}

// exit makes an app exit by itself.
func (f *fakeRuntime) exit(appID string, code int, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exitLocked(f.apps[appID], code, reason)
}

func (f *fakeRuntime) StopApp(ctx context.Context, podID, appID string, timeout time.Duration) (*pod.App, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("StopApp")
	a, ok := f.apps[appID]
	if !ok {
		return nil, errdefs.NotFound("app %s not found", appID)
	}
	if a.State != pod.AppExited {
		f.exitLocked(a, 143, "Error")
	}
	ca := *a
	return &ca, nil
}

func (f *fakeRuntime) RemoveApp(ctx context.Context, podID, appID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("RemoveApp")
	if _, ok := f.apps[appID]; !ok {
		return errdefs.NotFound("app %s not found", appID)
	}
	delete(f.apps, appID)
	return os.RemoveAll(f.AppDir(podID, appID))
}

func (f *fakeRuntime) LoadApp(podID, appID string) (*pod.App, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.apps[appID]
	if !ok {
		return nil, errdefs.NotFound("app %s not found", appID)
	}
	ca := *a
	return &ca, nil
}

func (f *fakeRuntime) AppDir(podID, appID string) string { return filepath.Join(f.dir, podID, appID) }
func (f *fakeRuntime) PodDir(podID string) string        { return filepath.Join(f.dir, podID) }

func (f *fakeRuntime) AppSpec(podID, appID string) (*specs.Spec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sp, ok := f.specs[appID]; ok {
		return sp, nil
	}
	s := &specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 4}}}}
	if r, ok := f.resources[appID]; ok {
		s.Linux = &specs.Linux{Resources: r}
	}
	return s, nil
}

func (f *fakeRuntime) UpdateApp(ctx context.Context, podID, appID string, r spec.Resources) (*pod.App, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("UpdateApp")
	a, ok := f.apps[appID]
	if !ok {
		return nil, errdefs.NotFound("app %s not found", appID)
	}
	res, err := spec.LinuxResources(r)
	if err != nil {
		return nil, err
	}
	f.resources[appID] = spec.MergeResources(f.resources[appID], res)
	if sp, ok := f.specs[appID]; ok {
		sp.Linux.Resources = spec.MergeResources(sp.Linux.Resources, res)
	}
	ca := *a
	return &ca, nil
}

// setStats makes the fake supervisor report st for an app.
func (f *fakeRuntime) setStats(appID string, st pod.AppStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st.Name = appID
	f.appStats[appID] = st
}

func (f *fakeRuntime) AppStats(ctx context.Context, podID string, appIDs []string) ([]pod.AppStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("AppStats")
	f.statsCalls = append(f.statsCalls, podID+":"+strings.Join(appIDs, ","))
	if err := f.statsErr[podID]; err != nil {
		return nil, err
	}
	var out []pod.AppStats
	for _, id := range appIDs {
		if st, ok := f.appStats[id]; ok {
			out = append(out, st)
		}
	}
	return out, nil
}

func (f *fakeRuntime) WritableLayerUsage(podID, appID string) (pod.FsUsage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("WritableLayerUsage")
	u, ok := f.fsUsage[appID]
	if !ok {
		return pod.FsUsage{}, errdefs.NotFound("no layer for %s", appID)
	}
	return u, nil
}

// The tests that exec, attach and reopen logs run over the real runtime.
func (f *fakeRuntime) Exec(context.Context, string, string, pod.ExecConfig, pod.Streams) (int, error) {
	return 0, errdefs.FailedPrecondition("not in the fake")
}

func (f *fakeRuntime) Attach(context.Context, string, string, pod.Streams) (int, error) {
	return 0, errdefs.FailedPrecondition("not in the fake")
}

func (f *fakeRuntime) ReopenLog(context.Context, string, string) error {
	return errdefs.FailedPrecondition("not in the fake")
}

func (f *fakeRuntime) PortForward(ctx context.Context, netns string, port int32, stream io.ReadWriteCloser) error {
	return stream.Close()
}

func (f *fakeRuntime) PullImage(ctx context.Context, ref string, auth *authn.AuthConfig) (image.Image, error) {
	f.mu.Lock()
	f.call("PullImage")
	f.lastAuth = auth
	img, ok := f.registry[ref]
	f.mu.Unlock()
	if !ok {
		return image.Image{}, errdefs.NotFound("pull %s: not found", ref)
	}
	got := f.addImage(img.RepoTags[0], "")
	return got, nil
}

func (f *fakeRuntime) getImageLocked(refOrID string) (image.Image, error) {
	for _, img := range f.images {
		if img.ID.String() == refOrID || slices.Contains(img.RepoTags, refOrID) {
			return img, nil
		}
	}
	return image.Image{}, errdefs.NotFound("image %q not found", refOrID)
}

func (f *fakeRuntime) GetImage(refOrID string) (image.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.getImageLocked(refOrID)
}

func (f *fakeRuntime) ListImages() ([]image.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.images), nil
}

func (f *fakeRuntime) RemoveImage(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("RemoveImage:" + id)
	n := len(f.images)
	f.images = slices.DeleteFunc(f.images, func(img image.Image) bool { return img.ID.String() == id })
	if len(f.images) == n {
		return errdefs.NotFound("image %s not found", id)
	}
	return nil
}

func (f *fakeRuntime) ImageConfig(img image.Image) (*ocispec.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ImageConfig")
	if c, ok := f.configs[img.ID]; ok {
		return c, nil
	}
	return nil, errdefs.NotFound("config of %s", img.ID)
}

func (f *fakeRuntime) ImageFsInfo() (string, image.Usage, error) {
	return "/var/lib/runclet/images", image.Usage{Bytes: 4096, Inodes: 7}, nil
}

func (f *fakeRuntime) HostDevice(hostPath, containerPath, permissions string) (spec.Device, error) {
	if hostPath == "/dev/missing" {
		return spec.Device{}, errdefs.NotFound("device %s not found", hostPath)
	}
	return spec.Device{HostPath: hostPath, ContainerPath: containerPath, Permissions: permissions, Type: "c", Major: 1, Minor: 3}, nil
}

func (f *fakeRuntime) HostDevices() ([]spec.Device, error) {
	return []spec.Device{{HostPath: "/dev/kmsg", Type: "c", Major: 1, Minor: 11}}, nil
}

func (f *fakeRuntime) NetworkReady() error { return nil }

func (f *fakeRuntime) Features() Features { return f.features }
