package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/runtime/fsutil"
)

// GCStats says what a GC removed.
type GCStats struct {
	Blobs  int   `json:"blobs"`
	Layers int   `json:"layers"`
	Debris int   `json:"debris"` // crash leftovers: partial blobs and layers
	Bytes  int64 `json:"bytes"`
}

// GC removes blobs and unpacked layers that no image references and that
// no live pod uses, and the debris of crashed pulls. It waits for pulls
// and imports in flight to finish and holds new ones back while it runs.
func (s *Store) GC(ctx context.Context) (GCStats, error) {
	var st GCStats
	lock, err := fsutil.LockFile(s.lockPath("gc.lock"), false)
	if err != nil {
		return st, err
	}
	defer lock.Unlock()
	d, err := s.load()
	if err != nil {
		return st, err
	}
	keepBlobs, keepChains := map[string]bool{}, map[string]bool{}
	for _, img := range d.Images {
		keepBlobs[img.ID.Encoded()] = true
		keepBlobs[img.ManifestDigest.Encoded()] = true
		if img.IndexDigest != "" {
			keepBlobs[img.IndexDigest.Encoded()] = true
		}
		for _, l := range img.Layers {
			keepBlobs[l.Digest.Encoded()] = true
			keepChains[l.ChainID.Encoded()] = true
		}
	}
	if s.InUse != nil {
		chains, err := s.InUse()
		if err != nil {
			return st, fmt.Errorf("image gc: listing layers in use: %w", err)
		}
		for _, c := range chains {
			keepChains[c.Encoded()] = true
		}
	}
	for _, sweep := range []struct {
		dir   string
		keep  map[string]bool
		count *int
	}{
		{filepath.Join(s.dir, "blobs", "sha256"), keepBlobs, &st.Blobs},
		{filepath.Join(s.dir, "layers", "sha256"), keepChains, &st.Layers},
		{filepath.Join(s.dir, "ingest"), nil, &st.Debris},
		{filepath.Join(s.dir, "layers", "tmp"), nil, &st.Debris},
	} {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := s.sweep(sweep.dir, sweep.keep, sweep.count, &st.Bytes); err != nil {
			return st, err
		}
	}
	// Per-layer lock files of removed layers: no pull holds one now, since
	// pulls hold the gc lock shared for their whole run.
	locks, _ := os.ReadDir(filepath.Join(s.dir, "locks"))
	for _, e := range locks {
		if hex, ok := strings.CutPrefix(e.Name(), "layer-"); ok && !keepChains[strings.TrimSuffix(hex, ".lock")] {
			os.Remove(filepath.Join(s.dir, "locks", e.Name()))
		}
	}
	return st, nil
}

func (s *Store) sweep(dir string, keep map[string]bool, count *int, freed *int64) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	for _, e := range ents {
		if keep[e.Name()] {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, _, _ := diskUsage(p)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("image gc: %w", err)
		}
		*count++
		*freed += b
	}
	return nil
}

// Prune removes images that have no tag; with all, every image. Images
// that pods use are kept (inUse returns their IDs; nil means none).
func (s *Store) Prune(ctx context.Context, all bool, inUse []digest.Digest) ([]Image, GCStats, error) {
	var removed []Image
	err := s.update(func(d *db) error {
		d.Images = slices.DeleteFunc(d.Images, func(img *Image) bool {
			drop := (all || len(img.RepoTags) == 0) && !slices.Contains(inUse, img.ID)
			if drop {
				removed = append(removed, *img)
			}
			return drop
		})
		return nil
	})
	if err != nil {
		return nil, GCStats{}, err
	}
	st, err := s.GC(ctx)
	return removed, st, err
}

// Usage is the disk space and inodes the image store takes: blobs plus
// unpacked layers, from sizes recorded at write time rather than a walk
// of every layer (kubelet asks for it often).
type Usage struct {
	Bytes  int64
	Inodes int64
}

// Usage reports the image filesystem usage.
func (s *Store) Usage() (Usage, error) {
	var u Usage
	blobs, err := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	if err != nil {
		return u, err
	}
	for _, b := range blobs {
		if info, err := b.Info(); err == nil {
			u.Bytes += info.Size()
			u.Inodes++
		}
	}
	layers, err := os.ReadDir(filepath.Join(s.dir, "layers", "sha256"))
	if err != nil {
		return u, err
	}
	for _, l := range layers {
		m, err := s.readLayerMeta(digest.NewDigestFromEncoded(digest.SHA256, l.Name()))
		if err != nil {
			continue // removed by a concurrent GC
		}
		u.Bytes += m.UsageBytes
		u.Inodes += m.UsageInodes
	}
	return u, nil
}

// Hold keeps GC from running until release is called, so a caller can
// look up an image's layers and record that it uses them without GC
// removing them in between.
func (s *Store) Hold() (release func(), err error) {
	l, err := fsutil.LockFile(s.lockPath("gc.lock"), true)
	if err != nil {
		return nil, err
	}
	return func() { l.Unlock() }, nil
}
