package testimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// untar extracts a tar of regular files and directories (all an OCI layout
// holds) into dir.
func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var data []byte
			if data, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, data, 0o644)
			}
		default:
			t.Fatalf("unexpected entry %s type %c", hdr.Name, hdr.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(da, db) {
		t.Errorf("%s and %s differ: the archive is not deterministic", a, b)
	}
}

func TestWriteDockerArchive(t *testing.T) {
	bb := MustBusybox(t)
	ml := MustMultiLayer(t)
	refs := map[string]v1.Image{
		"example.com/busybox:latest": bb,
		"example.com/busybox:other":  bb,
		"example.com/multi:1":        ml,
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	if err := WriteDockerArchive(a, refs); err != nil {
		t.Fatal(err)
	}
	// A rebuilt image is a different v1.Image value with the same content.
	refs["example.com/busybox:latest"] = MustBusybox(t)
	if err := WriteDockerArchive(b, refs); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, a, b)

	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(a) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 {
		t.Errorf("manifest.json has %d entries, want 2 (one per distinct image): %+v", len(m), m)
	}

	for ref, want := range refs {
		tag, err := name.NewTag(ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tarball.ImageFromPath(a, &tag)
		if err != nil {
			t.Fatalf("loading %s: %v", ref, err)
		}
		// The docker format does not keep the manifest, so compare what it
		// does keep: config and layers.
		gotCfg, _ := got.ConfigName()
		wantCfg, _ := want.ConfigName()
		if gotCfg != wantCfg {
			t.Errorf("%s: config %s, want %s", ref, gotCfg, wantCfg)
		}
		gl, err := got.Layers()
		if err != nil {
			t.Fatal(err)
		}
		wl, _ := want.Layers()
		if len(gl) != len(wl) {
			t.Fatalf("%s: %d layers, want %d", ref, len(gl), len(wl))
		}
		for i := range gl {
			if digest(t, gl[i]) != digest(t, wl[i]) {
				t.Errorf("%s: layer %d differs", ref, i)
			}
		}
	}
}

func TestWriteOCIArchive(t *testing.T) {
	images := map[string]v1.Image{
		"example.com/busybox:latest":   MustBusybox(t),
		"example.com/whiteouts:latest": MustWhiteouts(t),
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	if err := WriteOCIArchive(a, images); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCIArchive(b, images); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, a, b)

	root := filepath.Join(dir, "layout")
	untar(t, a, root)
	idx, err := layout.ImageIndexFromPath(root)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(images) {
		t.Fatalf("index.json has %d manifests, want %d", len(im.Manifests), len(images))
	}
	for _, desc := range im.Manifests {
		ref := desc.Annotations[RefNameAnnotation]
		want, ok := images[ref]
		if !ok {
			t.Errorf("unexpected ref name %q", ref)
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if digest(t, img) != digest(t, want) {
			t.Errorf("%s: digest differs", ref)
		}
		// Reading every layer verifies the blobs against their digests.
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			h, _, err := v1.SHA256(rc)
			rc.Close()
			if err != nil || h != digest(t, l) {
				t.Errorf("%s: layer blob does not match its digest", ref)
			}
		}
	}
}

func TestWriteOCIIndexArchive(t *testing.T) {
	src := MustIndex(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a.tar")
	if err := WriteOCIIndexArchive(a, map[string]v1.ImageIndex{"example.com/multiarch:latest": src}); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "layout")
	untar(t, a, root)
	top, err := layout.ImageIndexFromPath(root)
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations[RefNameAnnotation] != "example.com/multiarch:latest" {
		t.Fatalf("index.json: %+v", im.Manifests)
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, idx) != digest(t, src) {
		t.Errorf("stored index digest differs")
	}
	inner, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range inner.Manifests {
		if _, err := idx.Image(d.Digest); err != nil {
			t.Errorf("platform manifest %s not readable: %v", d.Platform, err)
		}
	}
}
