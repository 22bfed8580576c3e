package crilog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
)

// TailAll is the Tail value that selects every line (kubelet's -1).
const TailAll = -1

// ReadOptions selects what Copy writes. The zero value copies nothing of
// the existing log (Tail == 0, as in kubelet); set Tail to TailAll for all.
type ReadOptions struct {
	// Follow keeps copying as the file grows and across rotations (the path
	// renamed and recreated, or truncated in place) until ctx is cancelled
	// or Finished is closed.
	Follow bool
	// Finished, when closed, tells a follower that the container has exited
	// and its log writer is closed: Copy then copies what is left and
	// returns nil. Ignored without Follow.
	Finished <-chan struct{}
	// Since skips logical lines whose first record is older.
	Since time.Time
	// Tail selects the last Tail logical lines (of the selected streams)
	// present when Copy starts; TailAll (any negative value) selects all and
	// 0 selects none, so a follower sees only new lines. A logical line is a
	// run of P records of one stream closed by that stream's next F record;
	// a trailing run of P records with no F yet counts as a line. Tail is
	// applied before Since, as kubelet does.
	Tail int
	// Timestamps prefixes every logical line with the time of its first
	// record (RFC 3339, nanoseconds, UTC) and a space.
	Timestamps bool
	// Streams limits the output to these streams; nil means all.
	Streams map[Stream]bool
	// LimitBytes stops the copy after this many bytes of output (prefixes
	// included); the last line may be cut. 0 means unlimited.
	LimitBytes int64
}

// maxRecord bounds a single line the reader will buffer; longer lines are
// not something our writer produces (NewWriter caps maxLine well below it),
// and a corrupt file must not make the reader allocate without bound. Such
// lines are skipped.
const maxRecord = 1 << 20

const readChunk = 64 << 10

// Copy writes the log at path to stdout and stderr, each record to the
// writer of its stream, joining P records into lines: the pieces are
// written in order and the F record adds the newline; a last P with no F is
// written without one. A nil stdout or stderr drops that stream. Malformed
// lines are skipped, as kubelet does, and so are bytes after the last
// newline: they are a record still being written (copied once complete
// when following) or one torn by a failed write, never a whole record.
//
// Without Follow, Copy stops at end of file and returns nil, or ctx.Err()
// if ctx is cancelled first. With Follow it returns ctx.Err() when ctx is
// cancelled and nil once Finished is closed and the rest is copied. It
// returns nil early when LimitBytes is reached, an error of class not found
// if path does not exist, and a wrapped write error if stdout or stderr
// fails.
func Copy(ctx context.Context, path string, stdout, stderr io.Writer, opts ReadOptions) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errdefs.NotFound("read container log %s: %w", path, err)
		}
		return fmt.Errorf("read container log %s: %w", path, err)
	}
	c := &copier{opts: opts, dst: [2]io.Writer{stdout, stderr}, outDst: -1}
	for i, s := range [2]Stream{Stdout, Stderr} {
		c.sel[i] = c.dst[i] != nil && (opts.Streams == nil || opts.Streams[s])
	}
	lr := &lineReader{buf: make([]byte, readChunk)}
	lr.reset(f, 0)
	defer func() { lr.f.Close() }()

	if opts.Tail >= 0 {
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("read container log %s: %w", path, err)
		}
		start, cut, err := tailStart(f, fi.Size(), opts.Tail, c.sel)
		if err != nil {
			return fmt.Errorf("read container log %s: tail: %w", path, err)
		}
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			return fmt.Errorf("read container log %s: %w", path, err)
		}
		lr.off = start
		c.cut = cut
	}

	if opts.Follow {
		err = c.follow(ctx, path, lr)
	} else {
		err = c.drain(ctx, lr)
	}
	if err == nil {
		err = c.flush()
	}
	if errors.Is(err, errLimit) {
		return nil
	}
	if err != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("read container log %s: %w", path, err)
	}
	return err
}

var errLimit = errors.New("limit reached")

// copier turns records into output.
type copier struct {
	opts ReadOptions
	dst  [2]io.Writer
	sel  [2]bool
	// cut[i]: records of stream i at file offsets below it are before the
	// tail window (only for the first file read).
	cut [2]int64
	// inLine[i]: the last record of stream i was P, so the next one
	// continues the same logical line; keep[i] says whether that line is
	// being written.
	inLine [2]bool
	keep   [2]bool

	out     []byte
	outDst  int
	written int64
	tsbuf   [40]byte
}

// record handles one line read at file offset off.
func (c *copier) record(line []byte, off int64) error {
	rec, err := ParseRecord(line)
	if err != nil {
		return nil
	}
	i := streamIndex(rec.Stream)
	if !c.sel[i] {
		return nil
	}
	if !c.inLine[i] {
		c.keep[i] = off >= c.cut[i] && (c.opts.Since.IsZero() || !rec.Time.Before(c.opts.Since))
		if c.keep[i] && c.opts.Timestamps {
			ts := rec.Time.UTC().AppendFormat(c.tsbuf[:0], timeLayout)
			if err := c.put(i, append(ts, ' ')); err != nil {
				return err
			}
		}
	}
	c.inLine[i] = rec.Partial
	if !c.keep[i] {
		return nil
	}
	if err := c.put(i, rec.Content); err != nil {
		return err
	}
	if !rec.Partial {
		return c.put(i, []byte{'\n'})
	}
	return nil
}

// put buffers output for stream i; output goes out in large writes, and in
// record order across the two writers.
func (c *copier) put(i int, b []byte) error {
	if c.outDst != i && len(c.out) > 0 {
		if err := c.flush(); err != nil {
			return err
		}
	}
	c.outDst = i
	c.out = append(c.out, b...)
	if len(c.out) >= readChunk {
		return c.flush()
	}
	return nil
}

func (c *copier) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	out := c.out
	limited := false
	if lim := c.opts.LimitBytes; lim > 0 && c.written+int64(len(out)) >= lim {
		out = out[:lim-c.written]
		limited = true
	}
	c.out = c.out[:0]
	if len(out) > 0 {
		n, err := c.dst[c.outDst].Write(out)
		c.written += int64(n)
		if err != nil {
			return fmt.Errorf("write %s: %w", streamNames[c.outDst], err)
		}
	}
	if limited {
		return errLimit
	}
	return nil
}

// drain copies every complete line up to the current end of file.
func (c *copier) drain(ctx context.Context, lr *lineReader) error {
	for n := 0; ; n++ {
		if n&1023 == 1023 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, off, err := lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.record(line, off); err != nil {
			return err
		}
	}
}

// follow copies the file as it grows and follows it across rotations.
func (c *copier) follow(ctx context.Context, path string, lr *lineReader) error {
	w := newWaiter(ctx, dirOf(path), c.opts.Finished)
	defer w.close()
	finishing := false
	for {
		if err := c.drain(ctx, lr); err != nil {
			return err
		}
		if finishing {
			return nil
		}
		if err := c.flush(); err != nil {
			return err
		}
		switched, err := c.checkRotation(ctx, path, lr)
		if err != nil {
			return err
		}
		if switched {
			continue
		}
		w.wait()
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.opts.Finished != nil {
			select {
			case <-c.opts.Finished:
				finishing = true
			default:
			}
		}
	}
}

// checkRotation switches to a new file at path once the old one is final.
// Our writer (and kubelet's rotation protocol) only creates the new file in
// Reopen, while holding the lock that every write takes, so when a new
// inode is at path no write to the old file is still to come: the old file
// is read to its end once more and then replaced. A file shorter than what
// was read was truncated in place and is read again from the start.
func (c *copier) checkRotation(ctx context.Context, path string, lr *lineReader) (bool, error) {
	cur, err := lr.f.Stat()
	if err != nil {
		return false, err
	}
	st, err := os.Stat(path)
	if err == nil && !os.SameFile(cur, st) {
		if err := c.drain(ctx, lr); err != nil {
			return false, err
		}
		nf, err := os.Open(path)
		if err != nil {
			// Renamed again before we got there; keep waiting.
			return false, nil
		}
		lr.f.Close()
		lr.reset(nf, 0)
		c.cut = [2]int64{}
		return true, nil
	}
	if cur.Size() < lr.off+int64(lr.w-lr.r) {
		if _, err := lr.f.Seek(0, io.SeekStart); err != nil {
			return false, err
		}
		lr.reset(lr.f, 0)
		c.cut = [2]int64{}
		return true, nil
	}
	return false, nil
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			if i == 0 {
				return "/"
			}
			return path[:i]
		}
	}
	return "."
}

// lineReader yields complete lines of a file that may still be growing:
// at end of file the unterminated rest stays buffered for the next call.
type lineReader struct {
	f    *os.File
	buf  []byte
	r, w int   // buf[r:w] is unread
	scan int   // buf[r:scan] is known to hold no newline
	off  int64 // file offset of buf[r]
	skip bool  // dropping an over-long line up to its newline
}

func (lr *lineReader) reset(f *os.File, off int64) {
	lr.f, lr.r, lr.w, lr.scan, lr.off, lr.skip = f, 0, 0, 0, off, false
}

// next returns the next complete line without its newline, and its file
// offset; io.EOF when no complete line is available yet. The line aliases
// the reader's buffer until the next call.
func (lr *lineReader) next() ([]byte, int64, error) {
	for {
		if i := bytes.IndexByte(lr.buf[lr.scan:lr.w], '\n'); i >= 0 {
			end := lr.scan + i
			line, off := lr.buf[lr.r:end], lr.off
			lr.off += int64(end + 1 - lr.r)
			lr.r, lr.scan = end+1, end+1
			if lr.skip {
				lr.skip = false
				continue
			}
			return line, off, nil
		}
		lr.scan = lr.w
		if lr.r > 0 {
			n := copy(lr.buf, lr.buf[lr.r:lr.w])
			lr.scan -= lr.r
			lr.r, lr.w = 0, n
		}
		if lr.w == len(lr.buf) {
			if len(lr.buf) >= maxRecord {
				// Drop what we have of this line and skip to its end.
				lr.off += int64(lr.w)
				lr.w, lr.scan, lr.skip = 0, 0, true
			} else {
				nb := make([]byte, 2*len(lr.buf))
				copy(nb, lr.buf[:lr.w])
				lr.buf = nb
			}
		}
		n, err := lr.f.Read(lr.buf[lr.w:])
		lr.w += n
		if n == 0 {
			if err == nil || err == io.EOF {
				return nil, 0, io.EOF
			}
			return nil, 0, err
		}
	}
}

// tailLookback bounds the search for the earlier pieces (P records) of a
// wanted line once enough lines are counted. Only a previous record of the
// same stream proves a line has no earlier pieces, and a stream may have
// none for megabytes (one stderr line after 50 MB of stdout): without a
// bound, every such tail would read the whole file. Pieces of one line are
// written as the app produces them, so more than this much output of the
// other stream between two pieces of one line is not worth a full scan.
const tailLookback = 256 << 10

// tailStart finds where the last n logical lines of the selected streams
// begin, reading the file backwards in chunks so that a tail of a large
// file costs about the size of the tail. It returns the offset to start
// reading at and, per stream, the offset of that stream's first wanted
// record: lines of another stream that end between the two are before the
// window and must be skipped. A record still being written at the end of
// the file (no newline yet) is left to the forward reader.
func tailStart(r io.ReaderAt, size int64, n int, sel [2]bool) (int64, [2]int64, error) {
	var (
		open, seen, done, counted [2]bool
		cut                       [2]int64
		total                     int
		reached                   int64       // offset of the record that made total reach n
		end                       = int64(-1) // offset after the last complete record
		finished                  bool
	)
	// enough reports whether the record at off and everything before it
	// can be left unread.
	enough := func(off int64) bool {
		if total < n {
			return false
		}
		return !open[0] && !open[1] || off < reached-tailLookback
	}
	// visit processes one record, going backwards.
	visit := func(line []byte, off int64) {
		rec, err := ParseRecord(line)
		if err != nil {
			return
		}
		i := streamIndex(rec.Stream)
		if !sel[i] || done[i] {
			return
		}
		first := !seen[i]
		seen[i] = true
		count := func() {
			total++
			open[i], counted[i], cut[i] = true, true, off
			if total == n {
				reached = off
			}
		}
		if !rec.Partial {
			// The end of an earlier line: the line being collected is whole.
			open[i] = false
			if total < n {
				count()
			} else {
				done[i] = true
			}
			return
		}
		switch {
		case open[i]:
			cut[i] = off
		case first && total < n: // an unterminated last line
			count()
		default:
			done[i] = true
		}
	}

	var (
		tail     []byte // start of a record continuing from the previous chunk
		skipping bool   // that record grew past maxRecord and is dropped
		bufs     [2][]byte
		flip     int
	)
	for pos := size; pos > 0 && !finished; {
		k := int64(readChunk)
		if pos < k {
			k = pos
		}
		pos -= k
		if skipping {
			tail = nil
		}
		// Alternate two buffers: tail points into the previous one.
		buf := bufs[flip]
		if need := int(k) + len(tail); cap(buf) < need {
			buf = make([]byte, need)
			bufs[flip] = buf
		}
		flip ^= 1
		data := buf[:int(k)+len(tail)]
		copy(data[k:], tail)
		if _, err := r.ReadAt(data[:k], pos); err != nil && err != io.EOF {
			return 0, cut, err
		}

		e := len(data)
		if skipping || end < 0 {
			// Skip to the last newline of this chunk: what follows is a
			// record being written, or the rest of an over-long one.
			j := bytes.LastIndexByte(data[:k], '\n')
			if j < 0 {
				if !skipping {
					tail = data
					skipping = len(tail) > maxRecord
				}
				continue
			}
			if end < 0 {
				end = pos + int64(j) + 1
			}
			skipping = false
			e = j + 1
		}
		for {
			j := bytes.LastIndexByte(data[:e-1], '\n')
			if j < 0 && pos > 0 {
				break // the record starts in an earlier chunk
			}
			off := pos + int64(j) + 1
			if enough(off) {
				finished = true
				break
			}
			visit(data[j+1:e-1], off)
			if j < 0 {
				break
			}
			e = j + 1
		}
		tail = data[:e]
		skipping = len(tail) > maxRecord
	}
	if end < 0 {
		end = 0 // no complete record at all
	}
	// Streams without a wanted line start at the end: everything of theirs
	// before it is outside the window.
	start := end
	for i := range cut {
		if !counted[i] {
			cut[i] = end
		}
		if cut[i] < start {
			start = cut[i]
		}
	}
	return start, cut, nil
}
