package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/internal/fsutil"
)

// GCStats says what a GC removed.
type GCStats struct {
	Blobs  int   `json:"blobs"`
	Layers int   `json:"layers"`
	Debris int   `json:"debris"` // crash leftovers: partial blobs and layers
	Bytes  int64 `json:"bytes"`
}

// GC removes blobs and unpacked layers that no image references and that
// no existing pod uses, and the debris of crashed pulls. It waits for pulls
// and imports in flight to finish and holds new ones back while it runs.
func (s *Store) GC(ctx context.Context) (GCStats, error) {
	lock, err := fsutil.LockFile(s.lockPath("gc.lock"), false)
	if err != nil {
		return GCStats{}, err
	}
	defer lock.Unlock()
	uses, err := s.uses()
	if err != nil {
		return GCStats{}, err
	}
	return s.gcLocked(ctx, uses)
}

// uses asks the InUse hook what pods use. An error stops the caller: a
// GC that cannot tell what is in use must not remove anything.
func (s *Store) uses() ([]Use, error) {
	if s.InUse == nil {
		return nil, nil
	}
	u, err := s.InUse()
	if err != nil {
		return nil, fmt.Errorf("image store: listing what pods use: %w", err)
	}
	return u, nil
}

// usersOf names the pods that use image id, sorted, once each.
func usersOf(uses []Use, id digest.Digest) []string {
	var out []string
	for _, u := range uses {
		if u.Image == id && !slices.Contains(out, u.Pod) {
			out = append(out, u.Pod)
		}
	}
	slices.Sort(out)
	return out
}

// gcLocked is GC with gc.lock held exclusive and uses read under it.
func (s *Store) gcLocked(ctx context.Context, uses []Use) (GCStats, error) {
	var st GCStats
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
	for _, u := range uses {
		for _, c := range u.Chains {
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
// that any existing pod uses (running or stopped, as the InUse hook reads
// them from disk) are kept, and so are the layers they stack.
func (s *Store) Prune(ctx context.Context, all bool) ([]Image, GCStats, error) {
	lock, err := fsutil.LockFile(s.lockPath("gc.lock"), false)
	if err != nil {
		return nil, GCStats{}, err
	}
	defer lock.Unlock()
	uses, err := s.uses()
	if err != nil {
		return nil, GCStats{}, err
	}
	var removed []Image
	err = s.update(func(d *db) error {
		removed = nil
		d.Images = slices.DeleteFunc(d.Images, func(img *Image) bool {
			drop := (all || len(img.RepoTags) == 0) && len(usersOf(uses, img.ID)) == 0
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
	st, err := s.gcLocked(ctx, uses)
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
