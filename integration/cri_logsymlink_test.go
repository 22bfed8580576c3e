package integration

import (
	"os"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A symlink planted at a container's log path in the pod's log directory
// must not redirect the container's output (written by root) into the
// link's target.
func TestCRILogPathSymlinkNotFollowed(t *testing.T) {
	ci := newCRIInstance(t)
	img := ci.pushBusybox()
	ci.startDaemon()
	ctx := ctxT(t)
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
		t.Fatal(err)
	}
	sb := ci.sandboxConfig("logsym")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
	if err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := containerConfig("app", img, nil, "echo", "redirected")
	if err := os.MkdirAll(filepath.Join(sb.LogDirectory, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(sb.LogDirectory, cc.LogPath)); err != nil {
		t.Fatal(err)
	}
	cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cc, SandboxConfig: sb})
	if err == nil {
		if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err == nil {
			ci.waitState(ctx, cr.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED)
		}
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
		t.Fatalf("the container's output went through the symlink: victim holds %q", got)
	}
	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
}
