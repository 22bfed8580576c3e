package image

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

// Media types runclet accepts. Docker's schema2 types and OCI's share one
// JSON shape, so ocispec.Manifest reads both.
const (
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerConfig   = "application/vnd.docker.container.image.v1+json"
)

func isLayerType(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		ocispec.MediaTypeImageLayerNonDistributable, ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // still found in the wild
		ocispec.MediaTypeImageLayerNonDistributableZstd, //nolint:staticcheck
		"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return true
	}
	return false
}

func isConfigType(mt string) bool { return mt == ocispec.MediaTypeImageConfig || mt == mtDockerConfig }

// materialize turns a stored manifest into an Image: it reads the manifest
// and config blobs, checks they describe a container image, and makes
// every layer present (fetching with fetch where the blob is missing),
// several layers at a time.
func (s *Store) materialize(ctx context.Context, manifestDigest digest.Digest, fetch func(Layer) fetchFunc, parallel int, prog *progressTracker) (*Image, error) {
	raw, err := s.readBlob(manifestDigest)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errdefs.InvalidArgument("manifest %s: %w", manifestDigest, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = ocispec.MediaTypeImageManifest
	}
	if m.SchemaVersion != 2 || (mt != ocispec.MediaTypeImageManifest && mt != mtDockerManifest) {
		return nil, errdefs.InvalidArgument("manifest %s: unsupported manifest (schema %d, media type %q)", manifestDigest, m.SchemaVersion, mt)
	}
	if !isConfigType(m.Config.MediaType) {
		return nil, errdefs.InvalidArgument("manifest %s is not a container image: config media type %q", manifestDigest, m.Config.MediaType)
	}
	cfgRaw, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return nil, errdefs.InvalidArgument("image config %s: %w", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, errdefs.InvalidArgument("image %s: manifest has %d layers but config lists %d diff IDs", manifestDigest, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	chains := chainIDs(cfg.RootFS.DiffIDs)
	img := &Image{
		ID:                m.Config.Digest,
		ManifestDigest:    manifestDigest,
		ManifestMediaType: mt,
		Size:              int64(len(raw)) + m.Config.Size,
		Platform:          platformString(cfg.Platform),
		Stored:            time.Now().UTC(),
		RepoTags:          []string{},
		RepoDigests:       []string{},
	}
	for i, d := range m.Layers {
		if !isLayerType(d.MediaType) {
			return nil, errdefs.InvalidArgument("image %s: layer %s has unsupported media type %q", manifestDigest, d.Digest, d.MediaType)
		}
		img.Layers = append(img.Layers, Layer{Digest: d.Digest, DiffID: cfg.RootFS.DiffIDs[i], ChainID: chains[i], Size: d.Size, MediaType: d.MediaType})
		img.Size += d.Size
	}
	for _, l := range img.Layers {
		prog.waiting(l.Digest, l.Size)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, l := range img.Layers {
		g.Go(func() error {
			var f fetchFunc
			if fetch != nil {
				f = fetch(l)
			}
			return s.ensureLayer(gctx, l, f, prog)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return img, nil
}

func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// record stores img under the given names. A tag names exactly one image:
// giving it to img takes it from whichever image had it, which then stays
// as a dangling image until removed or pruned, as in Docker.
func (s *Store) record(img *Image, tags, digests []Reference) (Image, error) {
	var out Image
	err := s.update(func(d *db) error {
		cur := d.byID(img.ID)
		if cur == nil {
			cur = img
			d.Images = append(d.Images, cur)
		} else if cur.ManifestDigest != img.ManifestDigest {
			// Same config, other manifest (recompressed, or imported
			// from a tarball): the newest copy wins, names are kept.
			tags, digests := cur.RepoTags, cur.RepoDigests
			*cur = *img
			cur.RepoTags, cur.RepoDigests = tags, digests
		}
		if img.IndexDigest != "" {
			cur.IndexDigest = img.IndexDigest
		}
		if img.Verification != nil {
			cur.Verification = img.Verification
		}
		for _, t := range tags {
			name := t.String()
			for _, other := range d.Images {
				other.RepoTags = slices.DeleteFunc(other.RepoTags, func(x string) bool { return x == name })
			}
			cur.RepoTags = append(cur.RepoTags, name)
		}
		for _, r := range digests {
			if name := r.String(); !slices.Contains(cur.RepoDigests, name) {
				cur.RepoDigests = append(cur.RepoDigests, name)
			}
		}
		slices.Sort(cur.RepoTags)
		slices.Sort(cur.RepoDigests)
		out = *cur
		return nil
	})
	return out, err
}

// Tag gives the image src the additional name dst.
func (s *Store) Tag(src, dst string) (Image, error) {
	img, err := s.Get(src)
	if err != nil {
		return Image{}, err
	}
	ref, err := ParseReference(dst)
	if err != nil {
		return Image{}, err
	}
	if ref.Tag == "" {
		return Image{}, errdefs.InvalidArgument("tag %q: a tag reference is needed, not a digest", dst)
	}
	return s.record(&img, []Reference{ref}, nil)
}

// RemoveOptions tunes Remove.
type RemoveOptions struct {
	// Force removes an image that pods use: its names and record go, and
	// GC keeps the layers those pods stack for as long as the pods exist
	// (containerd's CRI does the same). Without it such a removal is
	// refused with an error naming the pods.
	Force bool
}

// Remove removes a name or an image. Given a tag, it removes that tag; the
// image goes with its last tag. Given an image ID or digest, it removes
// the image with all its names. Removing one of several tags always
// works; removing an image that an existing pod uses (in any state) needs
// opts.Force. The space is freed by the GC that follows, which keeps what
// pods still use.
func (s *Store) Remove(refOrID string, opts RemoveOptions) (Image, error) {
	// gc.lock held exclusive from the in-use check through the GC: no pod
	// can start using the image in between (pod creation holds it shared).
	lock, err := fsutil.LockFile(s.lockPath("gc.lock"), false)
	if err != nil {
		return Image{}, err
	}
	defer lock.Unlock()
	uses, err := s.uses()
	if err != nil {
		return Image{}, err
	}
	var removed Image
	err = s.update(func(d *db) error {
		img, err := d.resolve(refOrID)
		if err != nil {
			return err
		}
		removed = *img
		if ref, err := ParseReference(refOrID); err == nil && ref.Tag != "" && slices.Contains(img.RepoTags, ref.String()) {
			img.RepoTags = slices.DeleteFunc(img.RepoTags, func(x string) bool { return x == ref.String() })
			if len(img.RepoTags) > 0 {
				// Digests of the repository stay while another tag of it does.
				img.RepoDigests = slices.DeleteFunc(img.RepoDigests, func(rd string) bool {
					repo, _, _ := strings.Cut(rd, "@")
					return !slices.ContainsFunc(img.RepoTags, func(t string) bool { return strings.HasPrefix(t, repo+":") })
				})
				return nil
			}
		}
		if users := usersOf(uses, img.ID); len(users) > 0 && !opts.Force {
			return errdefs.FailedPrecondition("image %s (%s) is in use by pod(s) %s: remove the pods first, or force the removal (the pods keep its layers)", refOrID, img.ID.Encoded()[:12], strings.Join(users, ", "))
		}
		d.Images = slices.DeleteFunc(d.Images, func(x *Image) bool { return x.ID == img.ID })
		return nil
	})
	if err != nil {
		return Image{}, err
	}
	if _, err := s.gcLocked(context.Background(), uses); err != nil {
		return removed, fmt.Errorf("image removed, but freeing its space failed: %w", err)
	}
	return removed, nil
}
