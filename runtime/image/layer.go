package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/config"
	"github.com/runclet/runclet/runtime/image/unpack"
)

const layerMetaName = "layer.json"

// layerMeta is written last into an unpacked layer; its presence is what
// makes the layer exist.
type layerMeta struct {
	ChainID digest.Digest `json:"chainID"`
	DiffID  digest.Digest `json:"diffID"`
	Blob    digest.Digest `json:"blob"`
	// Usage is the disk space and inode count of diff/, measured once at
	// unpack time so image filesystem usage never needs a tree walk.
	UsageBytes  int64 `json:"usageBytes"`
	UsageInodes int64 `json:"usageInodes"`
}

// chainIDs computes the chain ID of each layer from the config's diff IDs
// (OCI image-spec: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
func chainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}

func (s *Store) hasLayer(chainID digest.Digest) bool {
	_, err := os.Stat(filepath.Join(s.layerPath(chainID), layerMetaName))
	return err == nil
}

// fetchFunc opens the compressed blob of a layer from its source.
type fetchFunc func(ctx context.Context) (io.ReadCloser, error)

// ensureLayer makes sure blob l.Digest is stored and chain l.ChainID is
// unpacked. The per-chain lock makes concurrent pulls of one layer, in
// this process or another, do the work once: the second finds it done.
// A missing blob is streamed from fetch once, hashed on the way to disk
// and unpacked in the same pass.
func (s *Store) ensureLayer(ctx context.Context, l Layer, fetch fetchFunc, prog *progressTracker) error {
	lock, err := fsutil.LockFile(s.lockPath("layer-"+l.ChainID.Encoded()+".lock"), false)
	if err != nil {
		return err
	}
	defer lock.Unlock()

	haveBlob, haveLayer := s.hasBlob(l.Digest, l.Size), s.hasLayer(l.ChainID)
	if haveBlob && haveLayer {
		prog.done(l.Digest, "already exists")
		return nil
	}
	var (
		src io.ReadCloser
		ing *ingester
	)
	if haveBlob {
		if src, err = os.Open(s.blobPath(l.Digest)); err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	} else {
		if fetch == nil {
			return errdefs.NotFound("layer blob %s is not in the store and there is no source for it", l.Digest)
		}
		if src, err = fetch(ctx); err != nil {
			return fmt.Errorf("fetch layer %s: %w", l.Digest, err)
		}
		if ing, err = s.newIngester(l.Digest, l.Size); err != nil {
			src.Close()
			return err
		}
		defer ing.abort()
	}
	defer src.Close()

	var r io.Reader = prog.reader(l.Digest, l.Size, src, haveBlob)
	if ing != nil {
		r = io.TeeReader(r, ing)
	}
	if haveLayer {
		_, err = io.Copy(io.Discard, r)
	} else {
		err = s.unpackLayer(ctx, l, r)
	}
	if err != nil {
		return err
	}
	if ing != nil {
		if err := ing.commit(); err != nil {
			if !haveLayer {
				os.RemoveAll(s.layerPath(l.ChainID))
			}
			return err
		}
	}
	prog.done(l.Digest, "done")
	return nil
}

// unpackLayer decompresses r, unpacks it into a temporary directory while
// hashing the tar, checks the diff ID and renames the directory into place.
// It reads r to its end so a caller hashing the compressed stream sees it all.
func (s *Store) unpackLayer(ctx context.Context, l Layer, r io.Reader) (retErr error) {
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "layers", "tmp"), l.ChainID.Encoded()+"-")
	if err != nil {
		return fmt.Errorf("unpack layer %s: %w", l.Digest, err)
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(tmp)
		}
	}()
	diff := filepath.Join(tmp, "diff")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return err
	}
	lim := s.unpackLimits()
	dec, err := decompress(r, lim.ZstdMaxWindow)
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	defer dec.Close()
	dg := digest.Canonical.Digester()
	uopts := unpack.Options{NoChown: os.Geteuid() != 0, MaxSize: lim.MaxLayerSize, MaxEntries: lim.MaxLayerEntries}
	if _, err := unpack.Apply(ctx, diff, io.TeeReader(dec, dg.Hash()), uopts); err != nil {
		var lerr *unpack.LimitError
		if errors.As(err, &lerr) {
			key := "image.unpack.max_layer_size"
			if lerr.What == "entries" {
				key = "image.unpack.max_layer_entries"
			}
			return fmt.Errorf("layer %s refused: %w (limit %s = %d)", l.Digest, lerr, key, lerr.Limit)
		}
		if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return errdefs.InvalidArgument("layer %s refused: its zstd window is larger than image.unpack.zstd_max_window = %d: %w", l.Digest, lim.ZstdMaxWindow, err)
		}
		return fmt.Errorf("unpack layer %s: %w", l.Digest, err)
	}
	// A gzip stream ends with a trailer after the tar; read it so the
	// decompressor checks its CRC and the compressed digest covers all bytes.
	if _, err := io.Copy(dg.Hash(), dec); err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if got := dg.Digest(); got != l.DiffID {
		return errdefs.InvalidArgument("layer %s: uncompressed content has digest %s, the image config says %s: rejected", l.Digest, got, l.DiffID)
	}
	bytes, inodes, err := diskUsage(diff)
	if err != nil {
		return err
	}
	meta, _ := json.Marshal(layerMeta{ChainID: l.ChainID, DiffID: l.DiffID, Blob: l.Digest, UsageBytes: bytes, UsageInodes: inodes})
	if err := fsutil.WriteFileAtomic(filepath.Join(tmp, layerMetaName), meta, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.layerPath(l.ChainID)); err != nil {
		return fmt.Errorf("unpack layer %s: %w", l.Digest, err)
	}
	return fsutil.SyncDir(filepath.Dir(s.layerPath(l.ChainID)))
}

var defaultUnpackLimits = sync.OnceValue(func() config.ImageUnpack { return config.Default().Image.Unpack })

// unpackLimits is Options.Unpack with the config defaults for zero fields.
func (s *Store) unpackLimits() config.ImageUnpack {
	l, d := s.opts.Unpack, defaultUnpackLimits()
	if l.MaxLayerSize <= 0 {
		l.MaxLayerSize = d.MaxLayerSize
	}
	if l.MaxLayerEntries <= 0 {
		l.MaxLayerEntries = d.MaxLayerEntries
	}
	if l.ZstdMaxWindow <= 0 {
		l.ZstdMaxWindow = d.ZstdMaxWindow
	}
	return l
}

// decompress sniffs the stream rather than trusting the media type:
// registries and `docker save` mislabel layers often enough. A zstd frame
// declaring a window over zstdMaxWindow is refused before the decoder
// allocates it. (gzip needs no such bound: its window is 32 KiB, and a
// gzip bomb is stopped by the unpacker's size limit.)
func decompress(r io.Reader, zstdMaxWindow int64) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderMaxWindow(uint64(zstdMaxWindow)),
			zstd.WithDecoderMaxMemory(uint64(zstdMaxWindow)))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	default:
		return io.NopCloser(br), nil
	}
}

func diskUsage(dir string) (bytes, inodes int64, err error) {
	seen := map[uint64]bool{}
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		inodes++
		bytes += st.Blocks * 512
		return nil
	})
	return bytes, inodes, err
}

func (s *Store) readLayerMeta(chainID digest.Digest) (*layerMeta, error) {
	data, err := os.ReadFile(filepath.Join(s.layerPath(chainID), layerMetaName))
	if err != nil {
		return nil, err
	}
	m := &layerMeta{}
	return m, json.Unmarshal(data, m)
}

// readStacked reads a file through a stack of overlay lower dirs (lowest
// first) the way overlayfs would show it, following symlinks inside the
// stacked view.
func readStacked(dirs []string, p string) ([]byte, error) {
	for hops := 0; hops < 16; hops++ {
		p = path.Clean("/" + p)
		target, data, err := lookupStacked(dirs, p)
		if err != nil {
			return nil, err
		}
		if target == "" {
			return data, nil
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return nil, errdefs.InvalidArgument("%s: too many levels of symbolic links", p)
}

// lookupStacked finds p in the topmost layer that has it. It returns the
// symlink target when p is a symlink, else the content.
func lookupStacked(dirs []string, p string) (string, []byte, error) {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i := len(dirs) - 1; i >= 0; i-- {
		hidden, err := hiddenBelow(dirs[i], parts)
		if err != nil {
			return "", nil, err
		}
		full := filepath.Join(dirs[i], p)
		st, err := os.Lstat(full)
		switch {
		case err == nil && isWhiteout(st):
			return "", nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
		case err == nil && st.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(full)
			return t, nil, err
		case err == nil:
			data, err := os.ReadFile(full)
			return "", data, err
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR):
			return "", nil, err
		}
		if hidden {
			break
		}
	}
	return "", nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
}

// hiddenBelow reports whether some parent of parts in this layer is a
// whiteout or an opaque directory, which hides lower layers' copies.
func hiddenBelow(dir string, parts []string) (bool, error) {
	cur := dir
	for _, part := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, part)
		st, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if isWhiteout(st) || !st.IsDir() {
			return true, nil
		}
		if v, _ := getxattr(cur, "trusted.overlay.opaque"); v == "y" {
			return true, nil
		}
	}
	return false, nil
}

func isWhiteout(st fs.FileInfo) bool {
	if st.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Rdev == 0
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
