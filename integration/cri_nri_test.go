package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// adjuster is an NRI plugin that gives every container an env variable
// and a read-only bind mount, and records the container ids it saw.
type adjuster struct {
	src string
	ids chan string
	env []string // the last container's, as the plugin was told
}

func (a *adjuster) CreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	a.env = slices.Clone(c.Env)
	a.ids <- c.Id
	adj := &api.ContainerAdjustment{}
	adj.AddEnv("NRI_ADDED", "from-plugin")
	adj.AddMount(&api.Mount{Source: a.src, Destination: "/nri", Type: "bind", Options: []string{"bind", "ro"}})
	return adj, nil, nil
}

// A real NRI plugin adjusts a container before runclet makes it, under
// the id the container then has, and is told the environment the app
// gets (runclet's PATH and HOSTNAME included).
func TestCRINRIAdjustsContainers(t *testing.T) {
	ci := newCRIInstance(t)
	sock := filepath.Join(filepath.Dir(ci.root), "nri.sock")
	cfg, err := os.OpenFile(ci.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, "[nri]\nenable = true\nsocket_path = %q\n", sock)
	cfg.Close()
	ci.startDaemon()
	ctx := ctxT(t)

	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "note"), []byte("mounted-by-plugin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plug := &adjuster{src: src, ids: make(chan string, 4)}
	s, err := stub.New(plug, stub.WithPluginName("adjuster"), stub.WithPluginIdx("10"), stub.WithSocketPath(sock))
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(pctx) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(200 * time.Millisecond) // registration; CreateContainer waits for it anyway

	img := ci.pushBusybox()
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
		t.Fatal(err)
	}
	sb := ci.sandboxConfig("nri")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
	if err != nil {
		t.Fatal(err)
	}
	cc := containerConfig("adjusted", img, nil, "sh", "-c", "echo $NRI_ADDED; cat /nri/note; echo $HOSTNAME")
	cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cc, SandboxConfig: sb})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-plug.ids:
		if id != cr.ContainerId {
			t.Fatalf("the plugin was told container %s, CreateContainer made %s", id, cr.ContainerId)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin never saw CreateContainer")
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	ci.waitLog(sb.LogDirectory+"/adjusted/0.log", "stdout F from-plugin", "stdout F mounted-by-plugin", "stdout F nri")
	for _, k := range []string{"PATH=/", "HOSTNAME=nri", "GREETING=hello-cri"} {
		if !slices.ContainsFunc(plug.env, func(kv string) bool { return strings.HasPrefix(kv, k) }) {
			t.Errorf("the plugin was not told %s...: %v", k, plug.env)
		}
	}
	var bundle struct {
		Process struct{ Env []string } `json:"process"`
	}
	data, err := os.ReadFile(filepath.Join(ci.root, "pods", run.PodSandboxId, "apps", cr.ContainerId, "bundle", "config.json"))
	if err != nil || json.Unmarshal(data, &bundle) != nil {
		t.Fatalf("bundle: %v", err)
	}
	if !slices.Equal(bundle.Process.Env, append(slices.Clone(plug.env), "NRI_ADDED=from-plugin")) {
		t.Fatalf("the app's env %v, the plugin was told %v", bundle.Process.Env, plug.env)
	}
}
