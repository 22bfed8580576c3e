package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/runclet/runclet/integration/peer"
	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

// The image tools runclet's archives are checked against, with the Debian
// package each comes from (integration/scripts/setup.sh installs them).
var interopPackages = map[string]string{"skopeo": "skopeo", "umoci": "umoci", "podman": "podman", "ctr": "containerd"}

// interop holds the images every row starts from (served by a private
// registry) and each tool's private state.
type interop struct {
	t   *testing.T
	reg *testregistry.Registry
	// busybox (OCI media types), multi (OCI) and multiDocker (the same
	// files with Docker schema2 media types, as `docker push` makes them).
	busybox, multi, multiDocker    string // references in reg
	index, indexHostID             string // a two-platform index; its host image's config digest
	busyID, multiID, multiDockerID string // config digests
	busyLayers, multiLayers        int
	policy                         string // skopeo's signature policy: accept anything
	podmanDir                      string
	ctr                            *peer.Containerd
}

// need skips the row when the tool's package could not be installed.
func (x *interop) need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not found: Debian package %s could not be installed here (integration/scripts/setup.sh installs it)", tool, interopPackages[tool])
	}
}

// cmd runs argv and returns its stdout, failing the test on an error.
func cmd(t *testing.T, stdin io.Reader, argv ...string) string {
	t.Helper()
	c := exec.Command(argv[0], argv[1:]...)
	var out, errOut bytes.Buffer
	c.Stdin, c.Stdout, c.Stderr = stdin, &out, &errOut
	if err := c.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// private runs argv in a mount namespace of its own where
// /var/lib/containers is an empty tmpfs: skopeo and podman keep a blob
// info cache there when run as root, whatever their other settings say.
// (Without that directory, /var/lib is covered instead; these tools need
// nothing from it when their roots are elsewhere.)
func private(argv ...string) []string {
	const script = `d=/var/lib/containers; [ -d "$d" ] || d=/var/lib; mount -t tmpfs runclet-interop "$d" && exec "$@"`
	return append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"}, argv...)
}

func (x *interop) skopeo(t *testing.T, args ...string) string {
	t.Helper()
	x.need(t, "skopeo")
	return cmd(t, nil, private(append([]string{"skopeo", "--policy", x.policy}, args...)...)...)
}

// podman runs podman with its storage (vfs), run root, temp dir and
// configuration under a private directory.
func (x *interop) podman(t *testing.T, args ...string) string {
	t.Helper()
	x.need(t, "podman")
	d := x.podmanDir
	argv := []string{"env", "CONTAINERS_CONF=" + d + "/containers.conf", "CONTAINERS_REGISTRIES_CONF=" + d + "/registries.conf",
		"CONTAINERS_STORAGE_CONF=" + d + "/storage.conf", "TMPDIR=" + d + "/tmp",
		"podman", "--root", d + "/root", "--runroot", d + "/runroot", "--tmpdir", d + "/libpod", "--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs", "--events-backend", "file"}
	return cmd(t, nil, private(append(argv, args...)...)...)
}

func (x *interop) setupPodman() {
	t := x.t
	// podman refuses a run root longer than 50 characters: a short name.
	dir, err := os.MkdirTemp("", "rpod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	x.podmanDir = dir
	for _, d := range []string{"tmp", "root", "runroot", "libpod"} {
		if err := os.MkdirAll(filepath.Join(x.podmanDir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	storage := fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n", x.podmanDir+"/runroot", x.podmanDir+"/root")
	for name, body := range map[string]string{"storage.conf": storage, "containers.conf": "", "registries.conf": ""} {
		if err := os.WriteFile(filepath.Join(x.podmanDir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// save and load run no container: vfs leaves no mounts, and the temp
	// dir's removal drops podman's storage and state.
}

// ctrCmd runs ctr against a private containerd (no CRI), started on first use.
func (x *interop) ctrCmd(t *testing.T, args ...string) string {
	t.Helper()
	x.need(t, "ctr")
	if x.ctr == nil {
		c := &peer.Containerd{Dir: filepath.Join(x.t.TempDir(), "ctd"), NoCRI: true}
		if err := c.Start(); err != nil {
			t.Fatalf("starting a private containerd: %v", err)
		}
		x.ctr = c
		x.t.Cleanup(func() {
			if err := c.Stop(); err != nil {
				x.t.Errorf("stopping containerd: %v", err)
			}
		})
	}
	return cmd(t, nil, append([]string{"ctr", "--address", x.ctr.Socket(), "--namespace", "interop"}, args...)...)
}

// toDockerSchema2 returns img with Docker schema2 media types (manifest,
// config, gzip layers).
func toDockerSchema2(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	history := cf.History
	cf.RootFS.DiffIDs, cf.History = nil, nil
	out, err := mutate.ConfigFile(mutate.MediaType(empty.Image, types.DockerManifestSchema2), cf)
	if err != nil {
		t.Fatal(err)
	}
	out = mutate.ConfigMediaType(out, types.DockerConfigJSON)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		if out, err = mutate.Append(out, mutate.Addendum{Layer: l, History: history[i], MediaType: types.DockerLayer}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func cfgID(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func newInterop(t *testing.T) *interop {
	x := &interop{t: t, reg: testregistry.StartTB(t)}
	busybox := testimage.MustBusybox(t)
	multi := testimage.MustMultiLayer(t)
	multiDocker := toDockerSchema2(t, multi)
	for ref, img := range map[string]v1.Image{"runclet/busybox:latest": busybox, "runclet/multi:v1": multi, "runclet/multi:docker": multiDocker} {
		if _, err := x.reg.Push(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	x.busybox, x.multi, x.multiDocker = x.reg.Ref("runclet/busybox:latest"), x.reg.Ref("runclet/multi:v1"), x.reg.Ref("runclet/multi:docker")
	x.busyID, x.multiID, x.multiDockerID = cfgID(t, busybox), cfgID(t, multi), cfgID(t, multiDocker)
	x.busyLayers, x.multiLayers = 1, 3
	idx := testimage.MustIndex(t)
	if _, err := x.reg.PushIndex("runclet/index:v1", idx); err != nil {
		t.Fatal(err)
	}
	x.index = x.reg.Ref("runclet/index:v1")
	host, err := idx.Image(testimage.Must(idx.IndexManifest()).Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	x.indexHostID = cfgID(t, host)
	x.policy = filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(x.policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	x.setupPodman()
	return x
}

// wantImage is an image an import must give: its ID ("" when the tool
// rewrites the config, as podman's oci-archive does) and layer count.
type wantImage struct {
	id     string
	layers int
}

// checkImported imports path (or stdin) into a fresh runclet store and
// checks it has exactly the wanted names.
func checkImported(t *testing.T, path string, stdin io.Reader, want map[string]wantImage) {
	t.Helper()
	in := newInstance(t, "")
	if stdin != nil {
		full := []string{runcletBin, "--config", in.config, "--root", in.root, "--run-root", in.runRoot, "image", "import", "-"}
		t.Logf("%s", cmd(t, stdin, full...))
	} else {
		t.Logf("%s", in.run("image", "import", path))
	}
	var imgs []lsEntry
	if err := json.Unmarshal([]byte(in.run("image", "ls", "-o", "json")), &imgs); err != nil {
		t.Fatal(err)
	}
	got := map[string]lsEntry{}
	for _, img := range imgs {
		for _, tag := range img.RepoTags {
			got[tag] = img
		}
	}
	for name, w := range want {
		img, ok := got[name]
		if !ok {
			t.Errorf("no image named %s after import; have %v", name, imgs)
			continue
		}
		if w.id != "" && img.ID != w.id {
			t.Errorf("%s: image ID %s, want %s", name, img.ID, w.id)
		}
		if len(img.Layers) != w.layers {
			t.Errorf("%s: %d layers, want %d", name, len(img.Layers), w.layers)
		}
		// The image's config is readable through the store.
		in.run("image", "inspect", name)
	}
	if len(got) != len(want) {
		t.Errorf("import gave names %v, want those of %v", slices.Sorted(mapKeys(got)), want)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// docker25Archive writes img the way `docker save` of Docker 25+ does:
// an OCI layout (uncompressed layers, index.json naming the image with
// containerd's annotation and the tag as ref.name) plus manifest.json and
// repositories pointing at the same blobs.
func docker25Archive(t *testing.T, path, name string, img v1.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	put := func(n string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	blob := func(data []byte) (string, string) {
		sum := sha256.Sum256(data)
		h := hex.EncodeToString(sum[:])
		put("blobs/sha256/"+h, data)
		return "sha256:" + h, "blobs/sha256/" + h
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir})
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgDigest, cfgPath := blob(cfg)
	manifest := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, "application/vnd.oci.image.manifest.v1+json", desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cfgDigest, Size: len(cfg)}, nil}
	var layerPaths []string
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		d, p := blob(data)
		manifest.Layers = append(manifest.Layers, desc{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: d, Size: len(data)})
		layerPaths = append(layerPaths, p)
	}
	mraw, _ := json.Marshal(manifest)
	mDigest, _ := blob(mraw)
	repo, tag, _ := strings.Cut(name, ":")
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []desc{{MediaType: manifest.MediaType, Digest: mDigest, Size: len(mraw),
			Annotations: map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}}})
	dm, _ := json.Marshal([]map[string]any{{"Config": cfgPath, "RepoTags": []string{name}, "Layers": layerPaths}})
	put("index.json", idx)
	put("manifest.json", dm)
	put("oci-layout", []byte(`{"imageLayoutVersion": "1.0.0"}`))
	put("repositories", []byte(fmt.Sprintf(`{%q:{%q:%q}}`, repo, tag, strings.TrimPrefix(cfgDigest, "sha256:"))))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func compress(t *testing.T, src, dst, kind string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	switch kind {
	case "gzip":
		w := gzip.NewWriter(&buf)
		w.Write(data)
		w.Close()
	case "zstd":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImageInteropImport imports what other tools write, each into a
// fresh store (issue 19). The table in docs/images.md is this test's.
func TestImageInteropImport(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	x := newInterop(t)
	multiName, busyName := "example.com/multi:v1", "example.com/busybox:latest"
	rows := []struct {
		name string
		// make writes the archive (or directory) and returns its path and
		// what importing it must give.
		make  func(t *testing.T, dir string) (string, map[string]wantImage)
		stdin bool
	}{
		{"skopeo docker-archive", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "--additional-tag", "example.com/multi:extra", "docker://"+x.multiDocker, "docker-archive:"+p+":"+multiName)
			w := wantImage{x.multiDockerID, x.multiLayers}
			return p, map[string]wantImage{multiName: w, "example.com/multi:extra": w}
		}, false},
		{"skopeo oci-archive", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+x.multi, "oci-archive:"+p+":"+multiName)
			return p, map[string]wantImage{multiName: {x.multiID, x.multiLayers}}
		}, false},
		{"skopeo oci layout directory, two images", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "layout")
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+x.busybox, "oci:"+p+":"+busyName)
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+x.multiDocker, "oci:"+p+":"+multiName)
			// skopeo writes a new config when it turns a Docker image into an OCI one.
			return p, map[string]wantImage{busyName: {x.busyID, x.busyLayers}, multiName: {"", x.multiLayers}}
		}, false},
		{"skopeo oci layout tarred, two images", func(t *testing.T, dir string) (string, map[string]wantImage) {
			l := filepath.Join(dir, "layout")
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+x.busybox, "oci:"+l+":"+busyName)
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+x.multi, "oci:"+l+":"+multiName)
			p := filepath.Join(dir, "a.tar")
			cmd(t, nil, "tar", "-C", l, "-cf", p, ".")
			return p, map[string]wantImage{busyName: {x.busyID, x.busyLayers}, multiName: {x.multiID, x.multiLayers}}
		}, false},
		{"podman save docker-archive", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.podman(t, "pull", "-q", "--tls-verify=false", x.multiDocker)
			x.podman(t, "save", "-q", "--format", "docker-archive", "-o", p, x.multiDocker)
			return p, map[string]wantImage{x.multiDocker: {x.multiDockerID, x.multiLayers}}
		}, false},
		{"podman save oci-archive", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.podman(t, "pull", "-q", "--tls-verify=false", x.multi)
			x.podman(t, "save", "-q", "--format", "oci-archive", "-o", p, x.multi)
			return p, map[string]wantImage{x.multi: {"", x.multiLayers}}
		}, false},
		{"podman save -m (multi-image docker-archive)", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.podman(t, "pull", "-q", "--tls-verify=false", x.busybox)
			x.podman(t, "pull", "-q", "--tls-verify=false", x.multiDocker)
			x.podman(t, "save", "-q", "-m", "-o", p, x.busybox, x.multiDocker)
			return p, map[string]wantImage{x.busybox: {x.busyID, x.busyLayers}, x.multiDocker: {x.multiDockerID, x.multiLayers}}
		}, false},
		{"ctr image export, two images", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.ctrCmd(t, "images", "pull", "--plain-http", x.busybox)
			x.ctrCmd(t, "images", "pull", "--plain-http", x.multiDocker)
			x.ctrCmd(t, "images", "export", p, x.busybox, x.multiDocker)
			return p, map[string]wantImage{x.busybox: {x.busyID, x.busyLayers}, x.multiDocker: {x.multiDockerID, x.multiLayers}}
		}, false},
		{"ctr image export of a multi-platform image", func(t *testing.T, dir string) (string, map[string]wantImage) {
			// containerd fetched only this platform's manifest; the
			// archive's index names the other one without its blobs.
			p := filepath.Join(dir, "a.tar")
			x.ctrCmd(t, "images", "pull", "--plain-http", x.index)
			x.ctrCmd(t, "images", "export", p, x.index)
			return p, map[string]wantImage{x.index: {x.indexHostID, 2}}
		}, false},
		{"skopeo oci-archive of a multi-platform image (--multi-arch all)", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "--multi-arch", "all", "docker://"+x.index, "oci-archive:"+p+":example.com/index:v1")
			return p, map[string]wantImage{"example.com/index:v1": {x.indexHostID, 2}}
		}, false},
		{"docker save (Docker 25+ layout)", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			docker25Archive(t, p, "docker.io/library/multi:v1", testimage.MustMultiLayer(t))
			return p, map[string]wantImage{"docker.io/library/multi:v1": {x.multiID, x.multiLayers}}
		}, false},
		{"gzip docker-archive on stdin", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+x.multiDocker, "docker-archive:"+p+":"+multiName)
			compress(t, p, p+".gz", "gzip")
			return p + ".gz", map[string]wantImage{multiName: {x.multiDockerID, x.multiLayers}}
		}, true},
		{"zstd oci-archive", func(t *testing.T, dir string) (string, map[string]wantImage) {
			p := filepath.Join(dir, "a.tar")
			x.skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+x.multi, "oci-archive:"+p+":"+multiName)
			compress(t, p, p+".zst", "zstd")
			return p + ".zst", map[string]wantImage{multiName: {x.multiID, x.multiLayers}}
		}, false},
	}
	for _, row := range rows {
		t.Run(strings.ReplaceAll(row.name, " ", "_"), func(t *testing.T) {
			p, want := row.make(t, t.TempDir())
			var stdin io.Reader
			if row.stdin {
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				stdin = f
			}
			checkImported(t, p, stdin, want)
		})
	}
}

// exported is a line of `runclet image export`'s output.
type exported struct{ name, id, manifest string }

// TestImageInteropExport has other tools read what runclet exports: an
// image pulled with a Docker schema2 manifest and one with an OCI
// manifest, in one archive (issue 19).
func TestImageInteropExport(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	x := newInterop(t)
	src := newInstance(t, "")
	src.run("image", "pull", "-q", x.multiDocker)
	src.run("image", "pull", "-q", x.busybox)
	dir := t.TempDir()
	archive := filepath.Join(dir, "export.tar")
	out := src.run("image", "export", x.multiDocker, x.busybox, archive)
	ex := map[string]exported{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "exported" || f[3] != "manifest" {
			t.Fatalf("export output %q", out)
		}
		ex[f[1]] = exported{f[1], f[2], f[4]}
	}
	md, bd := ex[x.multiDocker], ex[x.busybox]
	if md.id != x.multiDockerID || bd.id != x.busyID {
		t.Fatalf("export output %q: IDs want %s and %s", out, x.multiDockerID, x.busyID)
	}
	busyManifest, err := testimage.MustBusybox(t).Digest()
	if err != nil {
		t.Fatal(err)
	}
	// An OCI manifest goes out as it came; a Docker one gets OCI media
	// types and so a new digest, which the output says.
	if bd.manifest != busyManifest.String() || strings.Contains(out, bd.manifest+" (") {
		t.Fatalf("busybox's OCI manifest not exported as is: %q (want %s)", out, busyManifest)
	}
	if !strings.Contains(out, "(OCI media types; the stored Docker manifest is sha256:") {
		t.Fatalf("export does not say the Docker manifest was converted: %q", out)
	}
	layout := filepath.Join(dir, "layout")
	os.Mkdir(layout, 0o755)
	cmd(t, nil, "tar", "-C", layout, "-xf", archive)

	// files is a file of each image's top layer, to find in an unpacked rootfs.
	files := map[string]string{x.multiDocker: "data/dir/b.txt", x.busybox: "bin/busybox"}
	images := []exported{md, bd}

	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"runclet import", func(t *testing.T) {
			in := newInstance(t, "")
			in.run("image", "import", archive)
			var imgs []lsEntry
			if err := json.Unmarshal([]byte(in.run("image", "ls", "-o", "json")), &imgs); err != nil {
				t.Fatal(err)
			}
			for _, e := range images {
				i := slices.IndexFunc(imgs, func(l lsEntry) bool { return slices.Contains(l.RepoTags, e.name) })
				if i < 0 || imgs[i].ID != e.id || imgs[i].ManifestDigest != e.manifest {
					t.Errorf("%s after import: %+v, want ID %s manifest %s", e.name, imgs, e.id, e.manifest)
				}
			}
		}},
		{"skopeo oci-archive", func(t *testing.T) {
			for _, e := range images {
				raw := x.skopeo(t, "inspect", "--raw", "oci-archive:"+archive+":"+e.name)
				if got := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(raw))); got != e.manifest {
					t.Errorf("skopeo read manifest %s for %s, want %s", got, e.name, e.manifest)
				}
				d := filepath.Join(t.TempDir(), "dir")
				x.skopeo(t, "copy", "-q", "oci-archive:"+archive+":"+e.name, "dir:"+d)
				if _, err := os.Stat(filepath.Join(d, strings.TrimPrefix(e.id, "sha256:"))); err != nil {
					t.Errorf("skopeo copied %s without its config: %v", e.name, err)
				}
			}
		}},
		{"skopeo oci layout directory", func(t *testing.T) {
			for _, e := range images {
				x.skopeo(t, "copy", "-q", "oci:"+layout+":"+e.name, "dir:"+filepath.Join(t.TempDir(), "dir"))
			}
		}},
		{"skopeo docker-archive", func(t *testing.T) {
			for _, e := range images {
				d := filepath.Join(t.TempDir(), "dir")
				x.skopeo(t, "copy", "-q", "docker-archive:"+archive+":"+e.name, "dir:"+d)
				if _, err := os.Stat(filepath.Join(d, strings.TrimPrefix(e.id, "sha256:"))); err != nil {
					t.Errorf("skopeo copied %s without its config: %v", e.name, err)
				}
			}
		}},
		{"umoci unpack", func(t *testing.T) {
			x.need(t, "umoci")
			for _, e := range images {
				bundle := filepath.Join(t.TempDir(), "bundle")
				cmd(t, nil, "umoci", "unpack", "--image", layout+":"+e.name, bundle)
				if _, err := os.Lstat(filepath.Join(bundle, "rootfs", files[e.name])); err != nil {
					t.Errorf("umoci unpacked %s without /%s: %v", e.name, files[e.name], err)
				}
			}
		}},
		{"podman load", func(t *testing.T) {
			t.Logf("%s", x.podman(t, "load", "-i", archive))
			for _, e := range images {
				id := strings.TrimSpace(x.podman(t, "image", "inspect", "--format", "{{.Id}}", e.name))
				if "sha256:"+id != e.id {
					t.Errorf("podman has %s as %s, want %s", e.name, id, e.id)
				}
			}
		}},
		{"ctr image import, and its export back into runclet", func(t *testing.T) {
			x.ctrCmd(t, "images", "import", archive)
			ls := x.ctrCmd(t, "images", "ls")
			for _, e := range images {
				if !strings.Contains(ls, e.name+" ") || !strings.Contains(ls, e.manifest) {
					t.Errorf("ctr images ls does not show %s at %s:\n%s", e.name, e.manifest, ls)
				}
			}
			back := filepath.Join(t.TempDir(), "back.tar")
			x.ctrCmd(t, "images", "export", back, md.name, bd.name)
			checkImported(t, back, nil, map[string]wantImage{md.name: {md.id, x.multiLayers}, bd.name: {bd.id, x.busyLayers}})
		}},
	}
	for _, row := range rows {
		t.Run(strings.ReplaceAll(row.name, " ", "_"), row.run)
	}
}
