package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

type lsEntry struct {
	ID             string   `json:"id"`
	ManifestDigest string   `json:"manifestDigest"`
	RepoTags       []string `json:"repoTags"`
	RepoDigests    []string `json:"repoDigests"`
	Size           int64    `json:"size"`
	Layers         []any    `json:"layers"`
}

// wantSize is what a pull transfers: manifest, config and compressed layers.
func wantSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

func TestImagePullThenList(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	src, err := testimage.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	mdigest, err := reg.Push("runclet/multi:v1", src)
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "")
	ref := reg.Host() + "/runclet/multi:v1"
	out := in.run("image", "pull", ref)
	cfgName, _ := src.ConfigName()
	if strings.TrimSpace(out) != cfgName.String() {
		t.Fatalf("pull printed %q, want the image ID %s", out, cfgName)
	}

	table := in.run("image", "ls")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 {
		t.Fatalf("ls:\n%s", table)
	}
	fields := strings.Fields(lines[1])
	if fields[0] != reg.Host()+"/runclet/multi" || fields[1] != "v1" || fields[2] != mdigest.String() || fields[3] != cfgName.Hex[:12] {
		t.Fatalf("ls row %q: want repo, tag v1, digest %s, id %s", lines[1], mdigest, cfgName.Hex[:12])
	}

	var imgs []lsEntry
	if err := json.Unmarshal([]byte(in.run("image", "ls", "-o", "json")), &imgs); err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].ManifestDigest != mdigest.String() || len(imgs[0].Layers) != 3 {
		t.Fatalf("ls json: %+v", imgs)
	}
	if got, want := imgs[0].Size, wantSize(t, src); got != want {
		t.Fatalf("size %d, want %d", got, want)
	}

	var cfg struct {
		Config struct{ WorkingDir, StopSignal string }
	}
	if err := json.Unmarshal([]byte(in.run("image", "inspect", ref)), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.WorkingDir != "/data" || cfg.Config.StopSignal != "SIGQUIT" {
		t.Fatalf("inspect: %+v", cfg)
	}
}

func TestImageCLIImportExportTagRemove(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	dir := t.TempDir()
	archive := filepath.Join(dir, "busybox.tar")
	// The same tool the README's demo uses.
	mk := exec.Command("go", "run", "github.com/runclet/runclet/integration/cmd/mkimage", "-o", archive, "-name", "localhost/runclet/busybox:latest")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, out)
	}
	in := newInstance(t, "")
	if out := in.run("image", "import", archive); !strings.Contains(out, "localhost/runclet/busybox:latest") {
		t.Fatalf("import printed %q", out)
	}
	in.run("image", "tag", "localhost/runclet/busybox", "example.com/copy:1")
	exported := filepath.Join(dir, "out.tar")
	in.run("image", "export", "example.com/copy:1", exported)

	other := newInstance(t, "")
	other.run("image", "import", exported)
	var a, b []lsEntry
	json.Unmarshal([]byte(in.run("image", "ls", "-o", "json")), &a)
	json.Unmarshal([]byte(other.run("image", "ls", "-o", "json")), &b)
	if len(a) != 1 || len(b) != 1 || a[0].ManifestDigest != b[0].ManifestDigest || b[0].RepoTags[0] != "example.com/copy:1" {
		t.Fatalf("export/import round trip: %+v vs %+v", a, b)
	}

	in.run("image", "rm", "localhost/runclet/busybox:latest")
	json.Unmarshal([]byte(in.run("image", "ls", "-o", "json")), &a)
	if len(a) != 1 || len(a[0].RepoTags) != 1 || a[0].RepoTags[0] != "example.com/copy:1" {
		t.Fatalf("after removing one tag: %+v", a)
	}
	if _, stderr, err := in.try("image", "inspect", "localhost/runclet/busybox:latest"); err == nil || !strings.Contains(stderr, "not found") {
		t.Fatalf("inspect of a removed tag: err %v, stderr %q", err, stderr)
	}
	in.run("image", "rm", a[0].ID)
	if out := in.run("image", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("images left: %q", out)
	}
	if out := in.run("image", "gc"); !strings.Contains(out, "removed 0 blobs") {
		t.Fatalf("rm should already have freed everything; gc said %q", out)
	}
}

func TestConfigDefaultParses(t *testing.T) {
	in := newInstance(t, "")
	def := in.run("config", "default")
	in2 := newInstance(t, def)
	// A config file holding exactly the printed defaults is accepted.
	in2.run("image", "ls")
	if !strings.Contains(def, `root = "/var/lib/runclet"`) {
		t.Fatalf("defaults:\n%s", def)
	}
}
