package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/runclet/runclet/runtime/errdefs"
	"github.com/runclet/runclet/runtime/fsutil"
)

// Annotations on index.json entries that carry an image's name.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = ocispec.AnnotationRefName
)

// dockerManifestEntry is one entry of `docker save`'s manifest.json.
type dockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// archiveReader collects what an image tarball holds as it streams past:
// blobs go straight into the store (verified where the name gives the
// digest), small metadata files are kept in memory.
type archiveReader struct {
	s        *Store
	meta     map[string][]byte        // index.json, manifest.json, legacy *.json
	files    map[string]digest.Digest // other regular files, stored as blobs
	symlinks map[string]string        // docker save links duplicate layers
}

const maxArchiveMeta = 64 << 20

// Import stores the images of a `docker save` tarball or an OCI image
// layout tarball and returns them. Images without a name in the archive
// are stored untagged.
func (s *Store) Import(ctx context.Context, r io.Reader, progress ProgressFunc) ([]Image, error) {
	gcLock, err := fsutil.LockFile(s.lockPath("gc.lock"), true)
	if err != nil {
		return nil, err
	}
	defer gcLock.Unlock()

	ar := &archiveReader{s: s, meta: map[string][]byte{}, files: map[string]digest.Digest{}, symlinks: map[string]string{}}
	if err := ar.read(ctx, r); err != nil {
		return nil, err
	}
	prog := &progressTracker{fn: progress}
	if _, ok := ar.meta["index.json"]; ok {
		return s.importOCI(ctx, ar, prog)
	}
	if _, ok := ar.meta["manifest.json"]; ok {
		return s.importDocker(ctx, ar, prog)
	}
	return nil, errdefs.InvalidArgument("import: neither an OCI layout (index.json) nor a docker save archive (manifest.json)")
}

func (ar *archiveReader) read(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(bufio.NewReaderSize(r, 1<<20))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return errdefs.InvalidArgument("import: reading archive: %w", err)
		}
		name, err := archivePath(hdr.Name)
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
		case tar.TypeSymlink:
			target := hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			if target, err = archivePath(target); err != nil {
				return err
			}
			ar.symlinks[name] = target
		case tar.TypeReg:
			if err := ar.readFile(name, hdr, tr); err != nil {
				return err
			}
		default:
			return errdefs.InvalidArgument("import: unexpected entry %q of type %q in an image archive", hdr.Name, hdr.Typeflag)
		}
	}
}

// archivePath cleans a member name and refuses ones that leave the archive.
func archivePath(name string) (string, error) {
	clean := path.Clean(strings.TrimPrefix(name, "./"))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", errdefs.InvalidArgument("import: archive entry %q points outside the archive", name)
	}
	return clean, nil
}

func (ar *archiveReader) readFile(name string, hdr *tar.Header, r io.Reader) error {
	if alg, enc, ok := strings.Cut(strings.TrimPrefix(name, "blobs/"), "/"); ok && strings.HasPrefix(name, "blobs/") {
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
		if err := d.Validate(); err != nil {
			return errdefs.InvalidArgument("import: blob %q: %w", name, err)
		}
		if err := ar.s.putBlob(d, hdr.Size, r); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		ar.files[name] = d
		return nil
	}
	if strings.HasSuffix(name, ".json") || name == "oci-layout" || name == "repositories" {
		if hdr.Size > maxArchiveMeta {
			return errdefs.InvalidArgument("import: %s is %d bytes, more than an image archive's metadata can be", name, hdr.Size)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		ar.meta[name] = data
		if !strings.Contains(name, "/") && name != "index.json" && name != "manifest.json" {
			return nil
		}
		// A legacy config (<hex>.json) or a per-layer json: store as a
		// blob too, so it can be found by path below.
		d, err := ar.s.putBlobBytes(data)
		ar.files[name] = d
		return err
	}
	d, _, err := ar.s.putBlobUnverified(r)
	if err != nil {
		return fmt.Errorf("import: %s: %w", name, err)
	}
	ar.files[name] = d
	return nil
}

// blob returns the digest of the file at name, following docker save's
// layer symlinks.
func (ar *archiveReader) blob(name string) (digest.Digest, error) {
	for hops := 0; hops < 8; hops++ {
		if d, ok := ar.files[name]; ok {
			return d, nil
		}
		if d, ok := ar.meta[name]; ok {
			return digest.FromBytes(d), nil
		}
		t, ok := ar.symlinks[name]
		if !ok {
			break
		}
		name = t
	}
	return "", errdefs.InvalidArgument("import: the archive names %q but does not contain it", name)
}

func (s *Store) importOCI(ctx context.Context, ar *archiveReader, prog *progressTracker) ([]Image, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(ar.meta["index.json"], &idx); err != nil {
		return nil, errdefs.InvalidArgument("import: index.json: %w", err)
	}
	// docker save (25+) writes both; its manifest.json has the names.
	var dockerNames map[digest.Digest][]string
	if raw, ok := ar.meta["manifest.json"]; ok {
		var entries []dockerManifestEntry
		if json.Unmarshal(raw, &entries) == nil {
			dockerNames = map[digest.Digest][]string{}
			for _, e := range entries {
				if d, err := ar.blob(e.Config); err == nil {
					dockerNames[d] = append(dockerNames[d], e.RepoTags...)
				}
			}
		}
	}
	var out []Image
	for _, desc := range idx.Manifests {
		md, err := s.platformManifest(desc)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		img, err := s.materialize(ctx, md, nil, s.opts.MaxConcurrentDownloads, prog)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		names := annotatedNames(desc.Annotations)
		if len(names) == 0 {
			names = dockerNames[img.ID]
		}
		if desc.Digest != md {
			img.IndexDigest = desc.Digest
		}
		rec, err := s.recordNames(img, names, desc.Digest)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

func annotatedNames(a map[string]string) []string {
	if n := a[annotationContainerdName]; n != "" {
		return []string{n}
	}
	// ref.name is often only a tag ("latest"); a full name has a slash or colon.
	if n := a[annotationRefName]; strings.ContainsAny(n, "/:") {
		return []string{n}
	}
	return nil
}

// platformManifest returns the digest of the image manifest for this
// platform: desc itself, or its match inside a (nested) index.
func (s *Store) platformManifest(desc ocispec.Descriptor) (digest.Digest, error) {
	for depth := 0; depth < 4; depth++ {
		if desc.MediaType != ocispec.MediaTypeImageIndex && desc.MediaType != mtDockerList {
			return desc.Digest, nil
		}
		raw, err := s.readBlob(desc.Digest)
		if err != nil {
			return "", err
		}
		var idx ocispec.Index
		if err := json.Unmarshal(raw, &idx); err != nil {
			return "", errdefs.InvalidArgument("index %s: %w", desc.Digest, err)
		}
		found := false
		for _, m := range idx.Manifests {
			if m.Platform == nil || (m.Platform.OS == s.opts.Platform.OS && m.Platform.Architecture == s.opts.Platform.Architecture) {
				desc, found = m, true
				break
			}
		}
		if !found {
			return "", errdefs.NotFound("index %s has no image for %s", desc.Digest, s.opts.Platform.String())
		}
	}
	return "", errdefs.InvalidArgument("index %s: nested too deeply", desc.Digest)
}

func (s *Store) importDocker(ctx context.Context, ar *archiveReader, prog *progressTracker) ([]Image, error) {
	var entries []dockerManifestEntry
	if err := json.Unmarshal(ar.meta["manifest.json"], &entries); err != nil {
		return nil, errdefs.InvalidArgument("import: manifest.json: %w", err)
	}
	var out []Image
	for _, e := range entries {
		md, err := s.manifestForDockerEntry(ar, e)
		if err != nil {
			return nil, err
		}
		img, err := s.materialize(ctx, md, nil, s.opts.MaxConcurrentDownloads, prog)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		rec, err := s.recordNames(img, e.RepoTags, md)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// manifestForDockerEntry writes an OCI manifest for a legacy docker save
// entry, which has none: config and layer tars exactly as in the archive,
// so importing the same archive twice gives the same manifest digest.
func (s *Store) manifestForDockerEntry(ar *archiveReader, e dockerManifestEntry) (digest.Digest, error) {
	cd, err := ar.blob(e.Config)
	if err != nil {
		return "", err
	}
	cfg, err := s.readBlob(cd)
	if err != nil {
		return "", err
	}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
	}
	m.SchemaVersion = 2
	for _, l := range e.Layers {
		ld, err := ar.blob(l)
		if err != nil {
			return "", err
		}
		mt, size, err := s.sniffLayerType(ld)
		if err != nil {
			return "", err
		}
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: mt, Digest: ld, Size: size})
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return s.putBlobBytes(raw)
}

func (s *Store) sniffLayerType(d digest.Digest) (string, int64, error) {
	f, err := openFile(s.blobPath(d))
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	magic := make([]byte, 4)
	n, _ := io.ReadFull(f, magic)
	switch {
	case bytes.HasPrefix(magic[:n], []byte{0x1f, 0x8b}):
		return ocispec.MediaTypeImageLayerGzip, st.Size(), nil
	case bytes.HasPrefix(magic[:n], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return ocispec.MediaTypeImageLayerZstd, st.Size(), nil
	}
	return ocispec.MediaTypeImageLayer, st.Size(), nil
}

// recordNames records img under names given as strings in an archive, and
// a repo digest per named repository pointing at what the archive named.
func (s *Store) recordNames(img *Image, names []string, top digest.Digest) (Image, error) {
	var tags, digests []Reference
	for _, n := range names {
		ref, err := ParseReference(n)
		if err != nil {
			return Image{}, fmt.Errorf("import: image name %q: %w", n, err)
		}
		if ref.Tag != "" {
			tags = append(tags, ref)
		}
		digests = append(digests, ref.WithDigest(top))
	}
	return s.record(img, tags, digests)
}

// Export writes the named images as one OCI image layout tarball that also
// carries a docker manifest.json, so both `runclet image import` and
// `docker load` read it. Blobs are written as stored: exporting and
// importing again gives the same digests.
func (s *Store) Export(ctx context.Context, w io.Writer, refs []string) error {
	type entry struct {
		img  Image
		name string // full reference, or "" for an unnamed image
	}
	var entries []entry
	for _, r := range refs {
		img, err := s.Get(r)
		if err != nil {
			return err
		}
		name := ""
		if ref, err := ParseReference(r); err == nil && slices.Contains(img.RepoTags, ref.String()) {
			name = ref.String()
		} else if len(img.RepoTags) > 0 {
			name = img.RepoTags[0]
		}
		entries = append(entries, entry{img, name})
	}
	tw := tar.NewWriter(w)
	written := map[digest.Digest]bool{}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	var dockerEntries []dockerManifestEntry
	if err := writeTarFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, e := range entries {
		blobs := []digest.Digest{e.img.ManifestDigest, e.img.ID}
		de := dockerManifestEntry{Config: blobName(e.img.ID), RepoTags: []string{}}
		for _, l := range e.img.Layers {
			blobs = append(blobs, l.Digest)
			de.Layers = append(de.Layers, blobName(l.Digest))
		}
		for _, d := range blobs {
			if written[d] {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := s.writeBlobToTar(tw, d); err != nil {
				return err
			}
			written[d] = true
		}
		raw, err := s.readBlob(e.img.ManifestDigest)
		if err != nil {
			return err
		}
		desc := ocispec.Descriptor{MediaType: e.img.ManifestMediaType, Digest: e.img.ManifestDigest, Size: int64(len(raw))}
		if e.name != "" {
			ref, _ := ParseReference(e.name)
			desc.Annotations = map[string]string{annotationContainerdName: e.name, annotationRefName: ref.Tag}
			de.RepoTags = append(de.RepoTags, e.name)
		}
		idx.Manifests = append(idx.Manifests, desc)
		dockerEntries = append(dockerEntries, de)
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"index.json", idx}, {"manifest.json", dockerEntries}} {
		raw, err := json.Marshal(f.v)
		if err != nil {
			return err
		}
		if err := writeTarFile(tw, f.name, raw); err != nil {
			return err
		}
	}
	return tw.Close()
}

func blobName(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// Fixed metadata makes an export of the same images byte-identical.
var exportTime = time.Unix(0, 0).UTC()

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: exportTime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func (s *Store) writeBlobToTar(tw *tar.Writer, d digest.Digest) error {
	f, err := openFile(s.blobPath(d))
	if err != nil {
		return errdefs.FailedPrecondition("export: blob %s missing from the store: %w", d, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: blobName(d), Mode: 0o644, Size: st.Size(), ModTime: exportTime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
