// Package image is runclet's image store: a content-addressed blob store,
// image metadata (names → manifest), and layers unpacked once per chain ID
// into directories that pods stack as overlayfs lower dirs.
//
// Layout under <data root>/images:
//
//	blobs/sha256/<hex>              verified content (manifests, configs, layer tars)
//	ingest/                         blobs being written; leftovers are crash debris
//	layers/sha256/<chain hex>/diff  one unpacked layer (overlayfs whiteout format)
//	layers/sha256/<chain hex>/layer.json
//	layers/tmp/                     layers being unpacked; leftovers are crash debris
//	images.json                     image records, replaced atomically
//	locks/                          flock files: images (metadata), gc, one per layer
//
// Every write lands in a temporary name and is renamed into place, so a
// crash at any point leaves the store consistent plus debris that GC
// removes. Pulls and imports hold the gc lock shared for their whole run,
// GC holds it exclusive: GC never sees a blob that a pull has written but
// not yet recorded, and any debris GC finds belongs to a dead process.
package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/config"
	"github.com/runclet/runclet/runtime/image/trust"
)

// Image is one stored image: a platform manifest, its config and layers.
// Its ID is the config digest, as in Docker and containerd's CRI.
type Image struct {
	ID                digest.Digest `json:"id"`
	ManifestDigest    digest.Digest `json:"manifestDigest"`
	ManifestMediaType string        `json:"manifestMediaType"`
	// IndexDigest is set when the image was reached through an index;
	// the index blob is kept so RepoDigests stay verifiable.
	IndexDigest digest.Digest `json:"indexDigest,omitempty"`
	RepoTags    []string      `json:"repoTags"`
	RepoDigests []string      `json:"repoDigests"`
	Layers      []Layer       `json:"layers"`
	// Size is the sum of manifest, config and compressed layer sizes: what
	// a pull transfers, and what `crictl images` shows for containerd.
	Size     int64     `json:"size"`
	Platform string    `json:"platform"`
	Stored   time.Time `json:"stored"`
	// Verification is what the trust policy found when the image was
	// last pulled or verified; nil for images stored before it existed.
	Verification *trust.Result `json:"verification,omitempty"`
}

// Layer is one layer of an image.
type Layer struct {
	Digest    digest.Digest `json:"digest"` // of the blob as distributed
	DiffID    digest.Digest `json:"diffID"` // of the uncompressed tar
	ChainID   digest.Digest `json:"chainID"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType"`
}

type db struct {
	Version int      `json:"version"`
	Images  []*Image `json:"images"`
}

const dbVersion = 1

// Use is one app's (or image volume's) use of the store: the image it
// was made from and the layer chains it stacks.
type Use struct {
	Pod    string // the pod's name, or its ID, for messages
	PodID  string
	Image  digest.Digest
	Chains []digest.Digest
}

// Options configures a Store.
type Options struct {
	Registries             map[string]config.Registry
	MaxConcurrentDownloads int
	// Keychain resolves registry credentials; nil means ~/.docker/config.json.
	Keychain authn.Keychain
	// Platform images are resolved to; zero means this machine's.
	Platform v1.Platform
	// Unpack bounds each layer; zero fields take the config defaults.
	Unpack config.ImageUnpack
	// Trust, when set, is the trust policy every registry pull obeys.
	Trust *trust.Verifier
	// SkipVerify skips the policy for every pull of this store (the
	// CLI's --insecure-options=image, for one command).
	SkipVerify bool
}

// Store is an image store rooted in one directory. It is safe for
// concurrent use, and several processes may share one root.
type Store struct {
	dir  string
	opts Options

	// InUse, when set, returns what every existing pod uses, read from
	// disk so that it covers pods of other processes sharing the root.
	// GC keeps the layers in it even when no image references them any
	// more; Remove and Prune keep the images in it.
	InUse func() ([]Use, error)

	mu        sync.Mutex
	cache     *db
	cacheStat os.FileInfo
}

// Open opens (creating if needed) the store under dataRoot/images.
func Open(dataRoot string, opts Options) (*Store, error) {
	if opts.MaxConcurrentDownloads < 1 {
		opts.MaxConcurrentDownloads = 3
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Platform.OS == "" {
		opts.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		if runtime.GOARCH == "arm64" {
			opts.Platform.Variant = "v8"
		}
	}
	s := &Store{dir: filepath.Join(dataRoot, "images"), opts: opts}
	for _, d := range []string{"blobs/sha256", "ingest", "layers/sha256", "layers/tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	// Unpacked layers keep their setuid files: no host user may reach
	// them. An older store may have been made with open modes.
	for _, d := range []string{"", "blobs", "blobs/sha256", "ingest", "layers", "layers/sha256", "layers/tmp", "locks"} {
		if err := fsutil.PrivateDir(filepath.Join(s.dir, d), nil); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	return s, nil
}

// Dir is the store's root directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

func (s *Store) layerPath(chainID digest.Digest) string {
	return filepath.Join(s.dir, "layers", chainID.Algorithm().String(), chainID.Encoded())
}

func (s *Store) lockPath(name string) string { return filepath.Join(s.dir, "locks", name) }

func (s *Store) dbPath() string { return filepath.Join(s.dir, "images.json") }

// load returns the image records. Reads are served from memory unless the
// file changed underneath (another process wrote it), so kubelet's
// once-a-second listings never parse JSON they already have.
func (s *Store) load() (*db, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.dbPath())
	if errors.Is(err, fs.ErrNotExist) {
		s.cache, s.cacheStat = &db{Version: dbVersion}, nil
		return s.cache, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image metadata: %w", err)
	}
	if s.cache != nil && s.cacheStat != nil && os.SameFile(st, s.cacheStat) &&
		st.ModTime().Equal(s.cacheStat.ModTime()) && st.Size() == s.cacheStat.Size() {
		return s.cache, nil
	}
	data, err := os.ReadFile(s.dbPath())
	if err != nil {
		return nil, fmt.Errorf("read image metadata: %w", err)
	}
	d := &db{}
	if err := json.Unmarshal(data, d); err != nil {
		return nil, fmt.Errorf("read image metadata %s: %w", s.dbPath(), err)
	}
	if d.Version != dbVersion {
		return nil, errdefs.FailedPrecondition("image metadata %s has version %d, this runclet reads %d", s.dbPath(), d.Version, dbVersion)
	}
	s.cache, s.cacheStat = d, st
	return d, nil
}

// update applies fn to a private copy of the records under the metadata
// lock and writes the result atomically. fn's error aborts with no write.
func (s *Store) update(fn func(d *db) error) error {
	l, err := fsutil.LockFile(s.lockPath("images.lock"), false)
	if err != nil {
		return err
	}
	defer l.Unlock()
	cur, err := s.load()
	if err != nil {
		return err
	}
	d := cur.clone()
	if err := fn(d); err != nil {
		return err
	}
	slices.SortFunc(d.Images, func(a, b *Image) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	data, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(s.dbPath(), data, 0o600); err != nil {
		return err
	}
	s.mu.Lock()
	s.cache, s.cacheStat = nil, nil // next load re-stats and re-reads
	s.mu.Unlock()
	return nil
}

func (d *db) clone() *db {
	out := &db{Version: dbVersion, Images: make([]*Image, len(d.Images))}
	for i, img := range d.Images {
		c := *img
		c.RepoTags = slices.Clone(img.RepoTags)
		c.RepoDigests = slices.Clone(img.RepoDigests)
		c.Layers = slices.Clone(img.Layers)
		out.Images[i] = &c
	}
	return out
}

func (d *db) byID(id digest.Digest) *Image {
	for _, img := range d.Images {
		if img.ID == id {
			return img
		}
	}
	return nil
}

// List returns every image, sorted by ID.
func (s *Store) List() ([]Image, error) {
	d, err := s.load()
	if err != nil {
		return nil, err
	}
	out := make([]Image, len(d.Images))
	for i, img := range d.Images {
		out[i] = *img
	}
	return out, nil
}

// Get resolves a reference, an image ID (full, or a unique hex prefix of
// at least 6 characters) or a manifest digest to a stored image.
func (s *Store) Get(refOrID string) (Image, error) {
	d, err := s.load()
	if err != nil {
		return Image{}, err
	}
	img, err := d.resolve(refOrID)
	if err != nil {
		return Image{}, err
	}
	return *img, nil
}

func (d *db) resolve(s string) (*Image, error) {
	if dg, err := digest.Parse(s); err == nil {
		for _, img := range d.Images {
			if img.ID == dg || img.ManifestDigest == dg || img.IndexDigest == dg {
				return img, nil
			}
		}
		return nil, errdefs.NotFound("image %q not found", s)
	}
	if ref, err := ParseReference(s); err == nil {
		want := ref.String()
		for _, img := range d.Images {
			if slices.Contains(img.RepoTags, want) || slices.Contains(img.RepoDigests, want) {
				return img, nil
			}
		}
	}
	if len(s) >= 6 && isHex(s) {
		var found *Image
		for _, img := range d.Images {
			if strings.HasPrefix(img.ID.Encoded(), s) {
				if found != nil {
					return nil, errdefs.InvalidArgument("image ID prefix %q is ambiguous", s)
				}
				found = img
			}
		}
		if found != nil {
			return found, nil
		}
	}
	if _, err := ParseReference(s); err != nil && !isHex(s) {
		return nil, err
	}
	return nil, errdefs.NotFound("image %q not found", s)
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// Config returns the image's configuration (entrypoint, cmd, env, user,
// working dir, volumes, labels, stop signal, ...).
func (s *Store) Config(img Image) (*ocispec.Image, error) {
	data, err := os.ReadFile(s.blobPath(img.ID))
	if err != nil {
		return nil, errdefs.FailedPrecondition("config of image %s: %w", img.ID, err)
	}
	c := &ocispec.Image{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("config of image %s: %w", img.ID, err)
	}
	return c, nil
}

// RawConfig returns the config blob as stored.
func (s *Store) RawConfig(img Image) ([]byte, error) {
	data, err := os.ReadFile(s.blobPath(img.ID))
	if err != nil {
		return nil, errdefs.FailedPrecondition("config of image %s: %w", img.ID, err)
	}
	return data, nil
}

// LayerDirs returns the image's unpacked layer directories, lowest first.
// overlayfs wants them the other way round: lowerdir=top:...:bottom.
func (s *Store) LayerDirs(img Image) ([]string, error) {
	out := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		p := filepath.Join(s.layerPath(l.ChainID), "diff")
		if _, err := os.Stat(filepath.Join(s.layerPath(l.ChainID), layerMetaName)); err != nil {
			return nil, errdefs.FailedPrecondition("layer %s of image %s is not unpacked (pull the image again): %w", l.ChainID, img.ID, err)
		}
		out[i] = p
	}
	return out, nil
}

// ReadImageFile returns the content of path in the image's filesystem as
// its layers stack it, honouring whiteouts, without mounting anything.
// Pod creation uses it for the image's own /etc/passwd and /etc/group.
func (s *Store) ReadImageFile(img Image, path string) ([]byte, error) {
	dirs, err := s.LayerDirs(img)
	if err != nil {
		return nil, err
	}
	return readStacked(dirs, path)
}
