package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

// hasBlob reports whether a verified blob of that digest and size is stored.
// size < 0 skips the size check.
func (s *Store) hasBlob(d digest.Digest, size int64) bool {
	st, err := os.Stat(s.blobPath(d))
	return err == nil && st.Mode().IsRegular() && (size < 0 || st.Size() == size)
}

// ingester writes one blob: bytes go to a temporary file in ingest/ and
// through a digester; commit verifies digest and size and renames the file
// into blobs/. Anything but a successful commit removes the file.
type ingester struct {
	s        *Store
	want     digest.Digest
	wantSize int64
	f        *os.File
	dg       digest.Digester
	n        int64
}

func (s *Store) newIngester(want digest.Digest, size int64) (*ingester, error) {
	if err := want.Validate(); err != nil {
		return nil, errdefs.InvalidArgument("blob digest %q: %w", want, err)
	}
	f, err := os.CreateTemp(s.dir+"/ingest", want.Encoded()+"-*")
	if err != nil {
		return nil, fmt.Errorf("ingest %s: %w", want, err)
	}
	return &ingester{s: s, want: want, wantSize: size, f: f, dg: want.Algorithm().Digester()}, nil
}

func (w *ingester) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.dg.Hash().Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("ingest %s: %w", w.want, err)
	}
	if w.wantSize >= 0 && w.n > w.wantSize {
		return n, errdefs.InvalidArgument("blob %s is larger than the %d bytes its descriptor states", w.want, w.wantSize)
	}
	return n, nil
}

func (w *ingester) commit() error {
	defer w.abort()
	if w.wantSize >= 0 && w.n != w.wantSize {
		return errdefs.InvalidArgument("blob %s: got %d bytes, descriptor states %d", w.want, w.n, w.wantSize)
	}
	if got := w.dg.Digest(); got != w.want {
		return errdefs.InvalidArgument("blob %s: content has digest %s: rejected", w.want, got)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("ingest %s: %w", w.want, err)
	}
	if err := w.f.Chmod(0o400); err != nil {
		return fmt.Errorf("ingest %s: %w", w.want, err)
	}
	if err := os.Rename(w.f.Name(), w.s.blobPath(w.want)); err != nil {
		return fmt.Errorf("ingest %s: %w", w.want, err)
	}
	return fsutil.SyncDir(w.s.dir + "/blobs/" + w.want.Algorithm().String())
}

// abort drops the temporary file; after commit it only closes.
func (w *ingester) abort() {
	if w.f == nil {
		return
	}
	w.f.Close()
	os.Remove(w.f.Name()) // gone already after a successful rename
	w.f = nil
}

// putBlob stores r as the blob d, verifying it; an existing blob is kept.
func (s *Store) putBlob(d digest.Digest, size int64, r io.Reader) error {
	if s.hasBlob(d, size) {
		return nil
	}
	w, err := s.newIngester(d, size)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.abort()
		return err
	}
	return w.commit()
}

// putBlobBytes stores data as a blob and returns its digest.
func (s *Store) putBlobBytes(data []byte) (digest.Digest, error) {
	d := digest.FromBytes(data)
	return d, s.putBlob(d, int64(len(data)), bytesReader(data))
}

func (s *Store) readBlob(d digest.Digest) ([]byte, error) {
	data, err := os.ReadFile(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errdefs.NotFound("blob %s not in the store", d)
	}
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(data) != d {
		return nil, errdefs.FailedPrecondition("blob %s is corrupt on disk", d)
	}
	return data, nil
}

// putBlobUnverified stores r as a blob whose digest is not known in
// advance (a `docker save` layer.tar) and returns the digest it computed.
func (s *Store) putBlobUnverified(r io.Reader) (digest.Digest, int64, error) {
	f, err := os.CreateTemp(s.dir+"/ingest", "unknown-*")
	if err != nil {
		return "", 0, err
	}
	defer func() { f.Close(); os.Remove(f.Name()) }()
	dg := digest.Canonical.Digester()
	n, err := io.Copy(io.MultiWriter(f, dg.Hash()), r)
	if err != nil {
		return "", 0, err
	}
	d := dg.Digest()
	if s.hasBlob(d, n) {
		return d, n, nil
	}
	if err := f.Sync(); err != nil {
		return "", 0, err
	}
	if err := f.Chmod(0o400); err != nil {
		return "", 0, err
	}
	if err := os.Rename(f.Name(), s.blobPath(d)); err != nil {
		return "", 0, err
	}
	return d, n, fsutil.SyncDir(s.dir + "/blobs/" + d.Algorithm().String())
}

func openFile(p string) (*os.File, error) { return os.Open(p) }
