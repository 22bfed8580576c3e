package integration

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testimage"
)

// mustConfig is busybox's config with a label: another image ID over the
// same layers.
func mustConfig(t *testing.T) v1.Config {
	t.Helper()
	cf, err := testimage.MustBusybox(t).ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	c.Labels = map[string]string{"variant": "2"}
	return c
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v: %q", err, s)
	}
}

func dirEntries(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, err
}

// imageIDs is `runclet image ls -q`.
func imageIDs(in *instance) string { return in.run("image", "ls", "-q") }

// TestImageRemoveKeepsWhatPodsUse is issue 19's attack: `image rm` and
// `image prune --all` of the image a running pod uses once deleted the
// layers under the pod (`ls /` went from 12 entries to 0). Now the image
// is refused by tag, ID and digest with an error naming the pod, prune
// --all keeps it and the image of a stopped pod, --force removes only
// the names, and the pod's root filesystem stays whole through all of it.
func TestImageRemoveKeepsWhatPodsUse(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	// A second image (same layers, its own config) for a stopped pod.
	variant, err := mutate.Config(testimage.MustBusybox(t), mustConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	img2 := pi.image("variant", variant)
	pi.run("run", "-d", "--name", "inuse", img, "--", "sleep", "300")
	pi.run("run", "--name", "stoppedpod", img2, "--", "true") // exits; the pod stays, exited
	if st := pi.status("stoppedpod").State; st != "exited" {
		t.Fatalf("second pod is %s, want exited (a run pod whose app has exited)", st)
	}
	rootfs := func() string { return pi.run("exec", "inuse", "--", "ls", "/") }
	before := rootfs()
	if !strings.Contains(before, "bin") || len(strings.Fields(before)) < 5 {
		t.Fatalf("ls / in the pod: %q", before)
	}
	var full struct {
		Image struct {
			ID             string `json:"id"`
			ManifestDigest string `json:"manifestDigest"`
		} `json:"image"`
	}
	mustJSON(t, pi.run("image", "inspect", "--full", img), &full)
	id := full.Image.ID

	for _, name := range []string{img, id, strings.TrimPrefix(id, "sha256:")[:12], full.Image.ManifestDigest} {
		_, stderr, err := pi.try("image", "rm", name)
		if err == nil || !strings.Contains(stderr, "in use by pod(s) inuse") {
			t.Fatalf("image rm %s of an image a running pod uses: err %v, stderr %q", name, err, stderr)
		}
	}
	_, stderr, err := pi.try("image", "rm", img2)
	if err == nil || !strings.Contains(stderr, "stoppedpod") {
		t.Fatalf("image rm of an image a stopped pod uses: err %v, stderr %q", err, stderr)
	}
	// One of two tags goes.
	pi.run("image", "tag", img, "example.com/second:2")
	pi.run("image", "rm", "example.com/second:2")

	pi.run("image", "prune", "--all")
	ids := imageIDs(pi.instance)
	if !strings.Contains(ids, strings.TrimPrefix(id, "sha256:")) || len(strings.Fields(ids)) != 2 {
		t.Fatalf("prune --all removed images pods use; left: %q", ids)
	}
	if after := rootfs(); after != before {
		t.Fatalf("after prune --all ls / shows %q, before %q", after, before)
	}
	pi.run("image", "gc")
	pi.run("gc", "--grace=0") // pod GC removes the exited pod, then image GC runs
	if after := rootfs(); after != before {
		t.Fatalf("after gc ls / shows %q, before %q", after, before)
	}

	// --force: the names go, the running pod keeps its layers.
	pi.run("image", "rm", "--force", img)
	if ids := imageIDs(pi.instance); strings.Contains(ids, strings.TrimPrefix(id, "sha256:")) {
		t.Fatalf("image rm --force left the image: %q", ids)
	}
	if after := rootfs(); after != before {
		t.Fatalf("after image rm --force ls / shows %q, before %q", after, before)
	}
	pi.run("image", "prune", "--all")
	pi.run("image", "gc")
	if after := rootfs(); after != before {
		t.Fatalf("after prune and gc ls / shows %q, before %q", after, before)
	}
	// Once the pod is gone, GC frees its layers.
	pi.run("rm", "inuse")
	pi.run("image", "prune", "--all")
	out := pi.run("image", "gc")
	if layers, err := dirEntries(pi.root + "/images/layers/sha256"); err != nil || len(layers) != 0 {
		t.Fatalf("layers left after the last pod went: %v %v (gc said %q)", layers, err, out)
	}
}

// TestImageRemoveWithDaemonOnSameRoot: the daemon's pods count for the
// CLI (the in-use set is read from the pod dirs on disk, not from the
// calling process), and CRI RemoveImage of an image a running container
// uses removes the image (as containerd does) while the container's
// layers stay.
func TestImageRemoveWithDaemonOnSameRoot(t *testing.T) {
	ci := newCRIInstance(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	ctx := ctxT(t)
	pulled, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatal(err)
	}
	sbCfg := ci.sandboxConfig("criinuse")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	created, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId,
		Config: containerConfig("sleeper", pulled.ImageRef, nil, "sleep", "300"), SandboxConfig: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		t.Fatal(err)
	}
	ls := func() string {
		t.Helper()
		r, err := ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: created.ContainerId, Cmd: []string{"ls", "/"}, Timeout: 20})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("exec ls /: %v %v %s", r, err, r.GetStderr())
		}
		return string(r.Stdout)
	}
	before := ls()
	if !strings.Contains(before, "bin") {
		t.Fatalf("ls /: %q", before)
	}

	// The CLI, another process, sees the daemon's pod.
	_, stderr, err := ci.try("image", "rm", ref)
	if err == nil || !strings.Contains(stderr, "in use by pod(s) default/criinuse") {
		t.Fatalf("CLI image rm of the daemon pod's image: err %v, stderr %q", err, stderr)
	}
	ci.run("image", "prune", "--all")
	ci.run("image", "gc")
	if is, err := ci.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil || is.Image == nil {
		t.Fatalf("image gone after the CLI's prune --all: %v %v", is, err)
	}
	if after := ls(); after != before {
		t.Fatalf("after CLI prune and gc ls / shows %q, before %q", after, before)
	}

	// CRI RemoveImage: the image goes, the container's layers stay.
	if _, err := ci.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: pulled.ImageRef}}); err != nil {
		t.Fatal(err)
	}
	if is, err := ci.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil || is.Image != nil {
		t.Fatalf("ImageStatus after RemoveImage: %v %v", is, err)
	}
	if after := ls(); after != before {
		t.Fatalf("after CRI RemoveImage ls / shows %q, before %q", after, before)
	}
	ci.run("image", "gc")
	if after := ls(); after != before {
		t.Fatalf("after RemoveImage and a CLI gc ls / shows %q, before %q", after, before)
	}
	// A new container from the same image after a re-pull works too.
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
}
