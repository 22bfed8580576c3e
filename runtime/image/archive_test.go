package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
)

// legacyDockerArchive writes img the way skopeo's and podman's
// docker-archive: do (the pre-Docker-25 `docker save` layout): the config
// as <hex>.json and each layer as <hex>.tar at the top, <id>/layer.tar
// symlinks to them with <id>/json and <id>/VERSION beside, then
// manifest.json and repositories.
func legacyDockerArchive(t *testing.T, name string, img v1.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	file := func(n string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o444, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	entry := dockerManifestEntry{RepoTags: []string{name}}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		data := must[[]byte](t)(io.ReadAll(rc))
		rc.Close()
		d := digest.FromBytes(data)
		file(d.Encoded()+".tar", data)
		id := digest.FromString(d.String() + string(rune('a'+i))).Encoded()
		if err := tw.WriteHeader(&tar.Header{Name: id + "/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../" + d.Encoded() + ".tar"}); err != nil {
			t.Fatal(err)
		}
		file(id+"/VERSION", []byte("1.0"))
		file(id+"/json", []byte(`{"id":"`+id+`"}`))
		entry.Layers = append(entry.Layers, id+"/layer.tar")
	}
	cfg := must[[]byte](t)(img.RawConfigFile())
	entry.Config = digest.FromBytes(cfg).Encoded() + ".json"
	file(entry.Config, cfg)
	file("manifest.json", must[[]byte](t)(json.Marshal([]dockerManifestEntry{entry})))
	file("repositories", []byte(`{}`))
	tw.Close()
	return buf.Bytes()
}

// Issue 19 item 2: the config of a legacy archive is a top-level
// <hex>.json, which import kept only as metadata; in a store that did not
// have the config already, import failed with "blob ... not in the store".
func TestImportLegacyDockerArchiveIntoFreshStore(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	multi := must[v1.Image](t)(testimage.MultiLayer())
	archive := legacyDockerArchive(t, "example.com/multi:v1", multi)
	s := newStore(t, nil)
	imgs, err := s.Import(context.Background(), bytes.NewReader(archive), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].ID != configDigest(t, multi) || imgs[0].RepoTags[0] != "example.com/multi:v1" {
		t.Fatalf("imported %+v", imgs)
	}
	if data := must[[]byte](t)(s.ReadImageFile(imgs[0], "/data/dir/b.txt")); len(data) == 0 {
		t.Fatal("layer content missing after import")
	}
	// Importing it again gives the same manifest; the per-layer json and
	// VERSION files were not stored.
	again := must[[]Image](t)(newStore(t, nil).Import(context.Background(), bytes.NewReader(archive), nil))
	if again[0].ManifestDigest != imgs[0].ManifestDigest {
		t.Fatalf("manifest %s, then %s", imgs[0].ManifestDigest, again[0].ManifestDigest)
	}
	blobs := entries(t, s, "blobs/sha256")
	if want := 1 + 1 + len(imgs[0].Layers); len(blobs) != want {
		t.Fatalf("store has %d blobs, want manifest, config and %d layers: %v", len(blobs), len(imgs[0].Layers), blobs)
	}
}

// dockerSchema2 returns img with Docker schema2 media types (manifest,
// config, gzip layers), as `docker push` makes them.
func dockerSchema2(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	cf := must[*v1.ConfigFile](t)(img.ConfigFile()).DeepCopy()
	history := cf.History
	cf.RootFS.DiffIDs, cf.History = nil, nil
	out := must[v1.Image](t)(mutate.ConfigFile(mutate.MediaType(empty.Image, types.DockerManifestSchema2), cf))
	out = mutate.ConfigMediaType(out, types.DockerConfigJSON)
	for i, l := range must[[]v1.Layer](t)(img.Layers()) {
		out = must[v1.Image](t)(mutate.Append(out, mutate.Addendum{Layer: l, History: history[i], MediaType: types.DockerLayer}))
	}
	return out
}

// Issue 19 item 3: an image pulled with a Docker schema2 manifest was
// exported with that manifest in index.json, which skopeo and umoci do not
// read from an OCI layout. The export now carries an OCI manifest over the
// same config and layers, named by its full reference.
func TestExportWritesOCIMediaTypes(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	src := dockerSchema2(t, must[v1.Image](t)(testimage.MultiLayer()))
	if mt := must[types.MediaType](t)(src.MediaType()); mt != types.DockerManifestSchema2 {
		t.Fatalf("test image has media type %s", mt)
	}
	ref := reg.Host() + "/docker/multi:v1"
	must[v1.Hash](t)(reg.Push("docker/multi:v1", src))
	s := newStore(t, nil)
	img := must[Image](t)(s.Pull(context.Background(), ref, PullOptions{}))
	if img.ManifestMediaType != mtDockerManifest {
		t.Fatalf("pulled %s", img.ManifestMediaType)
	}

	var out bytes.Buffer
	done := must[[]Exported](t)(s.ExportImages(context.Background(), &out, []string{ref}))
	if len(done) != 1 || !done[0].Converted || done[0].ManifestDigest == img.ManifestDigest || done[0].StoredManifestDigest != img.ManifestDigest || done[0].ID != img.ID {
		t.Fatalf("export said %+v for %s", done, img.ManifestDigest)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(out.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = must[[]byte](t)(io.ReadAll(tr))
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	desc := idx.Manifests[0]
	if len(idx.Manifests) != 1 || desc.MediaType != ocispec.MediaTypeImageManifest || desc.Digest != done[0].ManifestDigest ||
		desc.Annotations[ocispec.AnnotationRefName] != ref || desc.Annotations[annotationContainerdName] != ref {
		t.Fatalf("index.json: %s", files["index.json"])
	}
	raw := files[blobName(desc.Digest)]
	if digest.FromBytes(raw) != desc.Digest || int64(len(raw)) != desc.Size {
		t.Fatalf("manifest blob does not match its descriptor")
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.Config.MediaType != ocispec.MediaTypeImageConfig || m.Config.Digest != img.ID {
		t.Fatalf("manifest: %s", raw)
	}
	for i, l := range m.Layers {
		if l.MediaType != ocispec.MediaTypeImageLayerGzip || l.Digest != img.Layers[i].Digest || files[blobName(l.Digest)] == nil {
			t.Fatalf("layer %d: %+v", i, l)
		}
	}

	// runclet reads it back: same ID and layers, the OCI manifest's digest.
	back := must[[]Image](t)(newStore(t, nil).Import(context.Background(), bytes.NewReader(out.Bytes()), nil))
	if back[0].ID != img.ID || back[0].ManifestDigest != desc.Digest || back[0].RepoTags[0] != ref {
		t.Fatalf("import of the export: %+v", back[0])
	}
	// An OCI image is exported as stored: same manifest digest.
	s2 := newStore(t, nil)
	must[[]Image](t)(s2.Import(context.Background(), bytes.NewReader(out.Bytes()), nil))
	done = must[[]Exported](t)(s2.ExportImages(context.Background(), io.Discard, []string{ref}))
	if done[0].Converted || done[0].ManifestDigest != desc.Digest {
		t.Fatalf("re-export of an OCI image: %+v", done[0])
	}
}

// `docker save | gzip` and friends, and OCI layout directories.
func TestImportCompressedArchivesAndDirectories(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	multi := must[v1.Image](t)(testimage.MultiLayer())
	dir := t.TempDir()
	plain := filepath.Join(dir, "oci.tar")
	if err := testimage.WriteOCIArchive(plain, map[string]v1.Image{"example.com/multi:v1": multi}); err != nil {
		t.Fatal(err)
	}
	raw := must[[]byte](t)(os.ReadFile(plain))
	var gz, zst bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(raw)
	gw.Close()
	zw := must[*zstd.Encoder](t)(zstd.NewWriter(&zst))
	zw.Write(raw)
	zw.Close()
	layoutDir := filepath.Join(dir, "layout")
	os.Mkdir(layoutDir, 0o755)
	if out, err := exec.Command("tar", "-xf", plain, "-C", layoutDir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	cases := map[string]func() io.ReadCloser{
		"gzip": func() io.ReadCloser { return io.NopCloser(bytes.NewReader(gz.Bytes())) },
		"zstd": func() io.ReadCloser { return io.NopCloser(bytes.NewReader(zst.Bytes())) },
		"directory": func() io.ReadCloser {
			return must[io.ReadCloser](t)(OpenArchive(layoutDir))
		},
		"symlink to a directory": func() io.ReadCloser {
			link := filepath.Join(dir, "link")
			os.Symlink(layoutDir, link)
			return must[io.ReadCloser](t)(OpenArchive(link))
		},
	}
	if bz, err := exec.Command("bzip2", "-c", plain).Output(); err == nil {
		cases["bzip2"] = func() io.ReadCloser { return io.NopCloser(bytes.NewReader(bz)) }
	}
	for name, open := range cases {
		t.Run(name, func(t *testing.T) {
			r := open()
			defer r.Close()
			imgs, err := newStore(t, nil).Import(context.Background(), r, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 1 || imgs[0].ID != configDigest(t, multi) || imgs[0].ManifestDigest != manifestDigest(t, multi) || imgs[0].RepoTags[0] != "example.com/multi:v1" {
				t.Fatalf("imported %+v", imgs)
			}
		})
	}
}

// Metadata files are held in memory: their total is bounded, not only
// each one's size.
func TestImportBoundsMetadataInMemory(t *testing.T) {
	big := strings.Repeat(" ", 30<<20)
	archive := buildTar(t, []tarMember{{name: "a.json", body: big}, {name: "b.json", body: big}, {name: "c.json", body: big}})
	s := newStore(t, nil)
	_, err := s.Import(context.Background(), bytes.NewReader(archive), nil)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "c.json makes the archive's metadata files more than") {
		t.Fatalf("want the metadata limit, got %v", err)
	}
}
