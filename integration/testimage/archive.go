package testimage

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// RefNameAnnotation is the index.json annotation WriteOCIArchive puts the
// image reference in.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// WriteDockerArchive writes refs (reference -> image, e.g.
// "example.com/busybox:latest") to path in the format of "docker save", the
// one "docker load" reads: manifest.json, config blobs and layer blobs.
//
// The file is written by ggcr's tarball.MultiRefWriteToFile and then
// rewritten in a canonical order: ggcr iterates over maps, so with more than
// one ref its entry order and RepoTags order vary from run to run. After the
// rewrite the same input always gives the same bytes, and images that are
// equal (same config and layers) share one manifest.json entry even when
// they are different v1.Image values.
func WriteDockerArchive(path string, refs map[string]v1.Image) error {
	if len(refs) == 0 {
		return fmt.Errorf("writing docker archive %s: no images", path)
	}
	m := make(map[name.Reference]v1.Image, len(refs))
	for r, img := range refs {
		ref, err := name.ParseReference(r)
		if err != nil {
			return fmt.Errorf("writing docker archive %s: %w", path, err)
		}
		m[ref] = img
	}
	stage, err := os.MkdirTemp("", "runclet-docker-archive-")
	if err != nil {
		return fmt.Errorf("writing docker archive %s: %w", path, err)
	}
	defer os.RemoveAll(stage)
	raw := filepath.Join(stage, "ggcr.tar")
	if err := tarball.MultiRefWriteToFile(raw, m); err != nil {
		return fmt.Errorf("writing docker archive %s: %w", path, err)
	}
	if err := canonicalDockerArchive(raw, stage, path); err != nil {
		return fmt.Errorf("writing docker archive %s: %w", path, err)
	}
	return nil
}

// canonicalDockerArchive rewrites the docker archive at raw to dst: blobs
// sorted by name and written once, manifest.json last with its entries
// merged and sorted. Blob contents are staged as files in stage.
func canonicalDockerArchive(raw, stage, dst string) error {
	in, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer in.Close()

	blobs := map[string]string{} // entry name -> staged file
	var manifest tarball.Manifest
	tr := tar.NewReader(in)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading ggcr output: %w", err)
		}
		if hdr.Name == "manifest.json" {
			if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
				return fmt.Errorf("parsing manifest.json: %w", err)
			}
			continue
		}
		if _, ok := blobs[hdr.Name]; ok {
			continue // content-addressed: a second copy is identical
		}
		staged := filepath.Join(stage, "blob-"+strconv.Itoa(len(blobs)))
		if err := copyToFile(staged, tr); err != nil {
			return err
		}
		blobs[hdr.Name] = staged
	}

	mb, err := json.Marshal(canonicalManifest(manifest))
	if err != nil {
		return fmt.Errorf("encoding manifest.json: %w", err)
	}
	names := make([]string, 0, len(blobs))
	for n := range blobs {
		names = append(names, n)
	}
	sort.Strings(names)

	return writeTarFile(dst, func(tw *tar.Writer) error {
		for _, n := range names {
			if err := addFileToTar(tw, n, blobs[n]); err != nil {
				return err
			}
		}
		// manifest.json last, where ggcr and docker put it.
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "manifest.json", Mode: 0o644, Size: int64(len(mb)), ModTime: Epoch}); err != nil {
			return err
		}
		_, err := tw.Write(mb)
		return err
	})
}

// canonicalManifest merges entries that describe the same image and sorts
// tags and entries.
func canonicalManifest(in tarball.Manifest) tarball.Manifest {
	var out tarball.Manifest
	byKey := map[string]int{}
	for _, d := range in {
		key := d.Config + "\x00" + strings.Join(d.Layers, "\x00")
		if i, ok := byKey[key]; ok {
			out[i].RepoTags = append(out[i].RepoTags, d.RepoTags...)
			continue
		}
		byKey[key] = len(out)
		d.RepoTags = slices.Clone(d.RepoTags)
		out = append(out, d)
	}
	for i := range out {
		slices.Sort(out[i].RepoTags)
		out[i].RepoTags = slices.Compact(out[i].RepoTags)
	}
	sort.Slice(out, func(i, j int) bool {
		ti, tj := strings.Join(out[i].RepoTags, ","), strings.Join(out[j].RepoTags, ",")
		if ti != tj {
			return ti < tj
		}
		return out[i].Config < out[j].Config
	})
	return out
}

// WriteOCIArchive writes images (reference -> image) to path as an
// uncompressed tar of an OCI image layout: oci-layout, index.json and
// blobs/sha256/*. Each image gets an index.json entry annotated with
// org.opencontainers.image.ref.name = the reference exactly as given, which
// should be a full reference like "example.com/busybox:latest". Entries are
// in reference order and the tar is canonical, so the output is
// deterministic.
func WriteOCIArchive(path string, images map[string]v1.Image) error {
	entries := make(map[string]any, len(images))
	for r, img := range images {
		entries[r] = img
	}
	return writeOCIArchive(path, entries)
}

// WriteOCIIndexArchive is WriteOCIArchive for image indexes (multi-platform
// images such as Index): each reference names an index, whose manifests and
// blobs are all stored.
func WriteOCIIndexArchive(path string, indexes map[string]v1.ImageIndex) error {
	entries := make(map[string]any, len(indexes))
	for r, idx := range indexes {
		entries[r] = idx
	}
	return writeOCIArchive(path, entries)
}

func writeOCIArchive(path string, entries map[string]any) error {
	if len(entries) == 0 {
		return fmt.Errorf("writing OCI archive %s: no images", path)
	}
	refs := make([]string, 0, len(entries))
	for r := range entries {
		if _, err := name.ParseReference(r); err != nil {
			return fmt.Errorf("writing OCI archive %s: %w", path, err)
		}
		refs = append(refs, r)
	}
	sort.Strings(refs)

	stage, err := os.MkdirTemp("", "runclet-oci-archive-")
	if err != nil {
		return fmt.Errorf("writing OCI archive %s: %w", path, err)
	}
	defer os.RemoveAll(stage)
	lp, err := layout.Write(stage, empty.Index)
	if err != nil {
		return fmt.Errorf("writing OCI archive %s: creating layout: %w", path, err)
	}
	for _, r := range refs {
		ann := layout.WithAnnotations(map[string]string{RefNameAnnotation: r})
		switch e := entries[r].(type) {
		case v1.Image:
			err = lp.AppendImage(e, ann)
		case v1.ImageIndex:
			err = lp.AppendIndex(e, ann)
		}
		if err != nil {
			return fmt.Errorf("writing OCI archive %s: adding %s: %w", path, r, err)
		}
	}
	if err := tarDir(stage, path); err != nil {
		return fmt.Errorf("writing OCI archive %s: %w", path, err)
	}
	return nil
}

// tarDir writes the tree under root to the tar file dst, with names relative
// to root. Only names, sizes and contents come from disk; modes, owners and
// times are fixed, so the same tree always gives the same tar.
func tarDir(root, dst string) error {
	return writeTarFile(dst, func(tw *tar.Writer) error {
		// WalkDir visits entries in lexical order.
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			if rel == "." {
				return nil
			}
			rel = filepath.ToSlash(rel)
			switch {
			case d.IsDir():
				return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: Epoch})
			case d.Type().IsRegular():
				return addFileToTar(tw, rel, p)
			default:
				return fmt.Errorf("unexpected file type in layout: %s", rel)
			}
		})
	})
}

// writeTarFile creates dst and fills it with fill; on failure dst is
// removed so no half-written archive is left behind.
func writeTarFile(dst string, fill func(*tar.Writer) error) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	tw := tar.NewWriter(f)
	if err := fill(tw); err != nil {
		return err
	}
	return tw.Close()
}

// addFileToTar appends the regular file src as entry name.
func addFileToTar(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: fi.Size(), ModTime: Epoch}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("adding %s to tar: %w", name, err)
	}
	return nil
}

func copyToFile(dst string, r io.Reader) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = io.Copy(f, r)
	return err
}
