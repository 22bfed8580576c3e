package unpack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// Options tunes Apply. The zero value is what image pulls use.
type Options struct {
	// NoChown skips lchown (for callers that are not root); ownership is
	// otherwise applied from the tar headers.
	NoChown bool
	// MaxSize caps both the bytes read from r (the uncompressed tar
	// stream, so a decompression bomb stops here) and the sum of the
	// regular files' sizes (a sparse entry counts its full size, which the
	// stream does not show). 0 means no cap.
	MaxSize int64
	// MaxEntries caps the number of tar entries. 0 means no cap.
	MaxEntries int64
}

// LimitError reports a layer over one of Options' limits. Apply stops at
// the first entry past the limit; the caller removes what was extracted.
type LimitError struct {
	What  string // "size" (Options.MaxSize) or "entries" (Options.MaxEntries)
	Limit int64
	Entry string // the tar entry that crossed the limit; "" past the last one
}

func (e *LimitError) Error() string {
	var s string
	if e.What == "entries" {
		s = fmt.Sprintf("layer has more than %d entries", e.Limit)
	} else {
		s = fmt.Sprintf("layer is larger than %d bytes uncompressed", e.Limit)
	}
	if e.Entry != "" {
		s += fmt.Sprintf(" (at entry %q)", e.Entry)
	}
	return s
}

// Unwrap puts limits in the invalid-argument class: the same layer will
// cross the same limit on every retry.
func (e *LimitError) Unwrap() error { return errdefs.ErrInvalidArgument }

// EscapeError reports a tar entry that would write, link or resolve outside
// the layer root.
type EscapeError struct {
	Entry  string // the entry's name as it appears in the tar header
	Reason string
}

func (e *EscapeError) Error() string {
	return fmt.Sprintf("layer entry %q escapes the layer root: %s", e.Entry, e.Reason)
}

// Unwrap puts escapes in the invalid-argument class: the layer is at fault,
// retrying will not help.
func (e *EscapeError) Unwrap() error { return errdefs.ErrInvalidArgument }

// copyBufSize is large enough that a big file costs few write(2) calls, and
// pooled so that concurrent pulls do not each allocate it per layer.
const copyBufSize = 1 << 20

var copyBufPool = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// Apply extracts the uncompressed tar stream r into dir, which must exist and
// be empty. It returns the number of bytes consumed from r. It always reads r
// to EOF on success (including tar padding after the end-of-archive marker) so
// that a caller hashing r sees every byte. On error, the caller removes dir;
// Apply never writes outside dir.
func Apply(ctx context.Context, dir string, r io.Reader, opts Options) (int64, error) {
	if err := checkEmpty(dir); err != nil {
		return 0, err
	}
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("unpack layer into %s: %w", dir, err)
	}
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)

	x := &extractor{ctx: ctx, opts: opts, root: root, buf: *bufp}
	x.cache.fd = -1
	defer x.close()

	cr := &countingReader{r: r, max: opts.MaxSize}
	if err := x.run(tar.NewReader(cr)); err != nil {
		return cr.n, err
	}
	if err := x.drain(cr); err != nil {
		return cr.n, fmt.Errorf("unpack layer into %s: read past end of archive: %w", dir, err)
	}
	return cr.n, nil
}

// checkEmpty enforces the precondition that lets "the hardlink target exists"
// mean "an earlier entry of this layer created it".
func checkEmpty(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("unpack layer into %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("unpack layer into %s: %w", dir, err)
	}
	if len(names) > 0 {
		return errdefs.FailedPrecondition("unpack layer into %s: directory is not empty", dir)
	}
	return nil
}

// extractor holds the state of one Apply call. It is not safe for concurrent
// use; one layer is one sequential stream.
type extractor struct {
	ctx  context.Context
	opts Options
	root int // O_PATH fd of the layer dir: every resolution starts here
	buf  []byte
	how  unix.OpenHow // reused so openat2 does not allocate per call

	// cache is the most recently resolved parent directory. Tar streams list
	// a directory's files together, so this saves an openat2 per entry.
	cache struct {
		path  string
		fd    int
		valid bool
	}

	// dirs get their times at the end: creating children would bump them.
	dirs []dirTimes

	entries   int64 // tar headers seen
	fileBytes int64 // sum of regular files' sizes
}

type dirTimes struct {
	name string // cleaned, relative to the root
	ts   [2]unix.Timespec
}

func (x *extractor) close() {
	if x.cache.fd >= 0 {
		unix.Close(x.cache.fd)
	}
	unix.Close(x.root)
}

func (x *extractor) run(tr *tar.Reader) error {
	for {
		if err := x.ctx.Err(); err != nil {
			return fmt.Errorf("unpack layer: %w", err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var lerr *LimitError
			if errors.As(err, &lerr) {
				return lerr
			}
			return fmt.Errorf("unpack layer: read tar header: %w", err)
		}
		if err := x.count(hdr); err != nil {
			return err
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	return x.applyDirTimes()
}

// drain consumes what follows the end-of-archive marker (tar writers pad to
// a record size) so the caller's digest covers the whole blob.
func (x *extractor) drain(r io.Reader) error {
	for {
		_, err := r.Read(x.buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// count enforces MaxEntries and the file-size half of MaxSize before an
// entry is extracted.
func (x *extractor) count(hdr *tar.Header) error {
	x.entries++
	if x.opts.MaxEntries > 0 && x.entries > x.opts.MaxEntries {
		return &LimitError{What: "entries", Limit: x.opts.MaxEntries, Entry: hdr.Name}
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		x.fileBytes += max(hdr.Size, 0)
		if x.opts.MaxSize > 0 && (hdr.Size > x.opts.MaxSize || x.fileBytes > x.opts.MaxSize) {
			return &LimitError{What: "size", Limit: x.opts.MaxSize, Entry: hdr.Name}
		}
	}
	return nil
}

// countingReader counts the bytes of the tar stream and stops at max (0:
// no cap) with a *LimitError.
type countingReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.max > 0 && c.n > c.max {
		return n, &LimitError{What: "size", Limit: c.max}
	}
	return n, err
}

// entryErr names the entry and the failed step, keeping err for errors.Is.
func entryErr(entry, op string, err error) error {
	return fmt.Errorf("unpack layer entry %q: %s: %w", entry, op, err)
}
