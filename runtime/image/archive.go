package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
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
	metaSize int64                    // bytes held in meta, at most maxArchiveMeta
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

	plain, err := decompressArchive(r, s.unpackLimits().ZstdMaxWindow)
	if err != nil {
		return nil, err
	}
	defer plain.Close()
	ar := &archiveReader{s: s, meta: map[string][]byte{}, files: map[string]digest.Digest{}, symlinks: map[string]string{}}
	if err := ar.read(ctx, plain); err != nil {
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

// decompressArchive returns the tar stream of an archive that may be
// gzip, zstd or bzip2 compressed (`docker save | gzip`, `podman save`
// piped through zstd), told by its magic bytes.
func decompressArchive(r io.Reader, zstdMaxWindow int64) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, errdefs.InvalidArgument("import: reading archive: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte("BZh")):
		return io.NopCloser(bzip2.NewReader(br)), nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X'}):
		return nil, errdefs.InvalidArgument("import: xz-compressed archives are not supported: decompress it first (xz -d)")
	}
	rc, err := decompress(br, zstdMaxWindow)
	if err != nil {
		return nil, errdefs.InvalidArgument("import: %w", err)
	}
	return rc, nil
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
		if ar.metaSize += hdr.Size; ar.metaSize > maxArchiveMeta {
			return errdefs.InvalidArgument("import: %s makes the archive's metadata files more than %d bytes, more than an image archive's metadata can be", name, maxArchiveMeta)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		// A legacy config (<hex>.json) stays here until a manifest.json
		// entry names it: storeBlob writes it then.
		ar.meta[name] = data
		return nil
	}
	if base := path.Base(name); (base == "VERSION" || base == "json") && strings.Count(name, "/") == 1 {
		return nil // the legacy format's per-layer files, never needed
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

// storeBlob is blob for a file that must be in the store afterwards: a
// metadata file (a legacy docker save config, <hex>.json at the top of
// the archive) is written to the store here.
func (ar *archiveReader) storeBlob(name string) (digest.Digest, error) {
	for hops := 0; hops < 8; hops++ {
		if d, ok := ar.files[name]; ok {
			return d, nil
		}
		if data, ok := ar.meta[name]; ok {
			d, err := ar.s.putBlobBytes(data)
			if err != nil {
				return "", fmt.Errorf("import: %s: %w", name, err)
			}
			ar.files[name] = d
			return d, nil
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
	cd, err := ar.storeBlob(e.Config)
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
		ld, err := ar.storeBlob(l)
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

// Exported says what an export wrote for one image.
type Exported struct {
	Name string        // the reference it was written under, "" if none
	ID   digest.Digest // config digest: the same in the archive and the store
	// ManifestDigest is the digest of the manifest in the archive. It
	// differs from StoredManifestDigest when a Docker schema2 manifest
	// was rewritten with OCI media types (Converted).
	ManifestDigest       digest.Digest
	StoredManifestDigest digest.Digest
	Converted            bool
}

// Export writes the named images as one OCI image layout tarball that also
// carries a docker manifest.json; see ExportImages.
func (s *Store) Export(ctx context.Context, w io.Writer, refs []string) error {
	_, err := s.ExportImages(ctx, w, refs)
	return err
}

// ExportImages writes the named images as one OCI image layout tarball
// that also carries a docker manifest.json, so `runclet image import`,
// `docker load`, `podman load`, `ctr image import`, skopeo's oci-archive:
// and docker-archive: and umoci all read it. Config and layer blobs are
// written as stored. An OCI manifest is written as stored too, so its
// digest survives export and import; a Docker schema2 manifest is
// rewritten with the OCI media types (tools that read OCI layouts accept
// only those there), which gives it a new digest: the image ID, config
// and layers stay the same.
func (s *Store) ExportImages(ctx context.Context, w io.Writer, refs []string) ([]Exported, error) {
	type entry struct {
		img  Image
		name string // full reference, or "" for an unnamed image
	}
	var entries []entry
	for _, r := range refs {
		img, err := s.Get(r)
		if err != nil {
			return nil, err
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
	var out []Exported
	if err := writeTarFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	for _, e := range entries {
		raw, err := s.readBlob(e.img.ManifestDigest)
		if err != nil {
			return nil, err
		}
		manifest, converted, err := ociManifest(raw)
		if err != nil {
			return nil, fmt.Errorf("export %s: manifest %s: %w", e.img.ID, e.img.ManifestDigest, err)
		}
		md := digest.FromBytes(manifest)
		ex := Exported{Name: e.name, ID: e.img.ID, ManifestDigest: md, StoredManifestDigest: e.img.ManifestDigest, Converted: converted}
		if !written[md] {
			if err := writeTarFile(tw, blobName(md), manifest); err != nil {
				return nil, err
			}
			written[md] = true
		}
		blobs := []digest.Digest{e.img.ID}
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
				return nil, err
			}
			if err := s.writeBlobToTar(tw, d); err != nil {
				return nil, err
			}
			written[d] = true
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(manifest))}
		if e.name != "" {
			// Both the full name: containerd reads its own annotation;
			// skopeo, umoci and podman look images up by ref.name, and a
			// bare tag would make two images of one archive ambiguous.
			desc.Annotations = map[string]string{annotationContainerdName: e.name, annotationRefName: e.name}
			de.RepoTags = append(de.RepoTags, e.name)
		}
		idx.Manifests = append(idx.Manifests, desc)
		dockerEntries = append(dockerEntries, de)
		out = append(out, ex)
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"index.json", idx}, {"manifest.json", dockerEntries}} {
		raw, err := json.Marshal(f.v)
		if err != nil {
			return nil, err
		}
		if err := writeTarFile(tw, f.name, raw); err != nil {
			return nil, err
		}
	}
	return out, tw.Close()
}

// OCI media types for Docker schema2 ones, for export into an OCI layout.
var dockerToOCI = map[string]string{
	mtDockerManifest: ocispec.MediaTypeImageManifest,
	mtDockerConfig:   ocispec.MediaTypeImageConfig,
	"application/vnd.docker.image.rootfs.diff.tar.gzip":         ocispec.MediaTypeImageLayerGzip,
	"application/vnd.docker.image.rootfs.diff.tar":              ocispec.MediaTypeImageLayer,
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // the OCI equivalent
}

// ociManifest returns raw unchanged for an OCI manifest, and for a Docker
// schema2 one the same manifest with OCI media types (converted true).
// The output is a function of the input: exports stay byte-identical.
func ociManifest(raw []byte) ([]byte, bool, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false, err
	}
	if m.MediaType != mtDockerManifest {
		return raw, false, nil
	}
	conv := func(d *ocispec.Descriptor) error {
		mt, ok := dockerToOCI[d.MediaType]
		if !ok {
			if strings.HasPrefix(d.MediaType, "application/vnd.oci.") {
				return nil
			}
			return errdefs.InvalidArgument("media type %q has no OCI equivalent", d.MediaType)
		}
		d.MediaType = mt
		return nil
	}
	m.MediaType = ocispec.MediaTypeImageManifest
	if err := conv(&m.Config); err != nil {
		return nil, false, err
	}
	for i := range m.Layers {
		if err := conv(&m.Layers[i]); err != nil {
			return nil, false, err
		}
	}
	out, err := json.Marshal(m)
	return out, true, err
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

// OpenArchive opens what Import reads from a path: a file (a tarball,
// compressed or not), or a directory holding an OCI image layout (skopeo's
// and buildah's oci: destination) or an unpacked docker save archive,
// which is streamed as a tarball of its contents.
func OpenArchive(p string) (io.ReadCloser, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, errdefs.InvalidArgument("import: %w", err)
	}
	if !st.IsDir() {
		f, err := os.Open(p)
		if err != nil {
			return nil, errdefs.InvalidArgument("import: %w", err)
		}
		return f, nil
	}
	// WalkDir does not descend into a root that is a symlink.
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return nil, errdefs.InvalidArgument("import: %w", err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDirectory(p, pw)) }()
	return pr, nil
}

// tarDirectory writes the regular files, directories and symlinks under
// root to w as a tar stream with names relative to root. Anything else is
// left for Import to refuse, as it would be in a tarball.
func tarDirectory(root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("import: reading directory %s: %w", root, err)
	}
	return tw.Close()
}
