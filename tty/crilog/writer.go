// Package crilog writes and reads container log files in the CRI log format
// that kubelet reads directly from disk:
//
//	<timestamp> <stdout|stderr> <P|F> <content>\n
//
// The timestamp is RFC 3339 with nanoseconds in UTC, always nine fraction
// digits (2016-10-06T00:17:09.669794202Z) so that records of one file have
// a fixed-width prefix. F marks the end of a line (the content's own newline
// is not repeated); P marks a piece of a line that was split because it
// exceeded the maximum line length, or an unterminated tail flushed when the
// process exited. docs/logging.md is the written contract.
package crilog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// Stream names a record's stream.
type Stream string

// The two streams of a container. With a terminal everything is Stdout.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// DefaultMaxLine is the content size above which a line is split into P
// records. It matches containerd's default, which kubelet is tuned for.
const DefaultMaxLine = 16 << 10

// timeLayout is RFC3339Nano with the fraction zero-padded: kubelet parses it
// with time.RFC3339Nano, and a fixed width keeps records aligned and lets the
// reader take a fast path.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// maxBatch bounds one write(2): a huge Write is emitted in batches of about
// this size so the record buffer stays small.
const maxBatch = 64 << 10

// Writer appends the records of one container (all its streams) to one
// file. Lines of different streams never mix inside a record because every
// record is built and written under one lock. The zero value is not usable;
// call NewWriter.
type Writer struct {
	path    string
	dir     *os.File // the log's directory, where Reopen opens the new file
	maxLine int

	mu      sync.Mutex
	f       io.WriteCloser // the *os.File; an interface so tests can inject failures
	closed  bool
	streams [2]pending // indexed by streamIndex
	torn    bool       // the last write(2) stopped inside a record
	burst   uint64     // failed writes in the current burst of failures
	logger  *slog.Logger
	now     func() time.Time // test hook
	pfx     [64]byte         // record prefix of the current call, under mu

	writeErrs atomic.Uint64
}

// pending is the unterminated tail of one stream, kept until its newline
// arrives, it grows past maxLine, or Flush.
type pending struct {
	buf []byte
}

// keepTail is the largest tail buffer kept allocated once it is empty again:
// a stream that once buffered a long partial line should not pin maxLine
// bytes for the rest of the app's life.
const keepTail = 1 << 10

// MaxMaxLine is the largest maxLine NewWriter accepts; larger values are
// lowered to it so that every record stays within what the reader buffers.
const MaxMaxLine = 512 << 10

// NewWriter opens path for appending (O_APPEND|O_CREATE, mode 0640,
// never through a symlink: see openLog); its parent directory must exist. maxLine <= 0 means DefaultMaxLine, and
// values above MaxMaxLine mean MaxMaxLine.
func NewWriter(path string, maxLine int) (*Writer, error) {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	maxLine = min(maxLine, MaxMaxLine)
	dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open container log directory: %w", err)
	}
	f, err := openLog(dir, path)
	if err != nil {
		dir.Close()
		return nil, err
	}
	return &Writer{path: path, dir: dir, maxLine: maxLine, f: f, now: time.Now}, nil
}

// openLog opens the log file in dir (held open since NewWriter, so a
// directory swapped for a symlink later does not move the log) and never
// follows a symlink there: whoever can write the pod's log directory must
// not redirect the container's output into another file. Only a regular
// file with a single link is accepted (no FIFO, no hard link to a file
// elsewhere).
func openLog(dir *os.File, path string) (*os.File, error) {
	base := filepath.Base(path)
	fd, err := unix.Openat(int(dir.Fd()), base, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o640)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("open container log %s: it is a symlink: %w", path, errdefs.InvalidArgument("refusing to follow %s", path))
		}
		return nil, fmt.Errorf("open container log %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open container log %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		unix.Close(fd)
		return nil, fmt.Errorf("open container log %s: %w", path, errdefs.InvalidArgument("not a regular file with one link (mode %#o, %d links)", st.Mode, st.Nlink))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_APPEND); err != nil { // drop O_NONBLOCK
		unix.Close(fd)
		return nil, fmt.Errorf("open container log %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// SetLogger sets where write failures are reported (default slog.Default()).
func (w *Writer) SetLogger(l *slog.Logger) {
	w.mu.Lock()
	w.logger = l
	w.mu.Unlock()
}

// Path returns the file the writer appends to.
func (w *Writer) Path() string { return w.path }

func streamIndex(s Stream) int {
	switch s {
	case Stdout:
		return 0
	case Stderr:
		return 1
	}
	return -1
}

var streamNames = [2]string{string(Stdout), string(Stderr)}

// streamWriter is the io.Writer view of one stream.
type streamWriter struct {
	w   *Writer
	idx int
}

type badStream struct{ s Stream }

func (b badStream) Write([]byte) (int, error) {
	return 0, errdefs.InvalidArgument("crilog: unknown stream %q (want stdout or stderr)", string(b.s))
}

// StreamWriter returns the writer for stream s. Each Write may carry any
// bytes: several lines, part of a line. Complete lines become F records at
// once; the unterminated tail is kept until its newline arrives. Write
// always reports len(p), nil unless the Writer is closed: a failed write(2)
// is counted (WriteErrors) and its data dropped, because stopping would back
// the app up behind a full pipe. An unknown stream yields a writer whose
// Write fails with an invalid-argument error.
func (w *Writer) StreamWriter(s Stream) io.Writer {
	i := streamIndex(s)
	if i < 0 {
		return badStream{s}
	}
	return &streamWriter{w: w, idx: i}
}

func (sw *streamWriter) Write(p []byte) (int, error) {
	return sw.w.write(sw.idx, p)
}

// bufPool holds record buffers. They are shared by every Writer in the
// process, so a supervisor with many quiet apps holds no buffer per app;
// a buffer is only taken for the duration of one Write.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 8<<10)
	return &b
}}

// recordBuf builds records for one Write call. buf[0] is reserved for a
// newline that terminates a record torn by an earlier failed write.
type recordBuf struct {
	bp     *[]byte
	buf    []byte
	prefix []byte // "<ts> <stream> " for the current call, in Writer.pfx
}

func (w *Writer) write(idx int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, fmt.Errorf("crilog %s: %w", w.path, os.ErrClosed)
	}
	var rb recordBuf
	w.start(&rb, idx)
	n := len(p)
	w.split(&rb, idx, p)
	w.finish(&rb)
	return n, nil
}

// start takes a buffer and formats the timestamp once for the whole call:
// every line of one read shares it, as with containerd, which keeps the
// per-line cost to two appends.
func (w *Writer) start(rb *recordBuf, idx int) {
	rb.bp = bufPool.Get().(*[]byte)
	rb.buf = append((*rb.bp)[:0], '\n')
	pfx := w.now().UTC().AppendFormat(w.pfx[:0], timeLayout)
	pfx = append(pfx, ' ')
	pfx = append(pfx, streamNames[idx]...)
	rb.prefix = append(pfx, ' ')
}

func (w *Writer) emit(rb *recordBuf, tag byte, parts ...[]byte) {
	rb.buf = append(rb.buf, rb.prefix...)
	rb.buf = append(rb.buf, tag, ' ')
	for _, part := range parts {
		rb.buf = append(rb.buf, part...)
	}
	rb.buf = append(rb.buf, '\n')
	if len(rb.buf) >= maxBatch {
		w.writeOut(rb)
		rb.buf = append(rb.buf[:0], '\n')
	}
}

// split turns p into records. A P record is emitted only once more than
// maxLine bytes of a line are known, so a line of exactly maxLine bytes is
// one F record however it was chunked, and the result never depends on how
// the app's output was split into reads.
func (w *Writer) split(rb *recordBuf, idx int, p []byte) {
	st := &w.streams[idx]
	max := w.maxLine
	for len(p) > 0 {
		if len(st.buf) == 0 {
			// Fast path: lines straight out of p, no copy into the tail.
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				for len(p) > max {
					w.emit(rb, 'P', p[:max])
					p = p[max:]
				}
				st.buf = append(st.buf, p...)
				return
			}
			line := p[:i]
			for len(line) > max {
				w.emit(rb, 'P', line[:max])
				line = line[max:]
			}
			w.emit(rb, 'F', line)
			p = p[i+1:]
			continue
		}
		room := max - len(st.buf)
		i := bytes.IndexByte(p, '\n')
		switch {
		case i >= 0 && i <= room:
			w.emit(rb, 'F', st.buf, p[:i])
			st.reset()
			p = p[i+1:]
		case len(p) <= room: // no newline at all, and it still fits
			st.buf = append(st.buf, p...)
			return
		default: // the line goes on past maxLine
			w.emit(rb, 'P', st.buf, p[:room])
			st.reset()
			p = p[room:]
		}
	}
}

func (st *pending) reset() {
	if cap(st.buf) > keepTail {
		st.buf = nil
		return
	}
	st.buf = st.buf[:0]
}

// finish writes what the call built in one write(2) and returns the buffer.
func (w *Writer) finish(rb *recordBuf) {
	if len(rb.buf) > 1 {
		w.writeOut(rb)
	}
	if cap(rb.buf) <= 4*maxBatch {
		*rb.bp = rb.buf[:0]
		bufPool.Put(rb.bp)
	}
}

// writeOut issues the write. Failures are counted and reported once per
// burst; the data is dropped. If a write stopped inside a record, the next
// one starts with a newline so the torn record does not swallow the next.
func (w *Writer) writeOut(rb *recordBuf) {
	out := rb.buf[1:]
	if w.torn {
		out = rb.buf
	}
	n, err := w.f.Write(out)
	if err == nil {
		w.torn = false
		if w.burst > 0 {
			w.log().Info("container log writes recovered", "path", w.path, "failed", w.burst)
			w.burst = 0
		}
		return
	}
	if n > 0 {
		w.torn = true
	}
	w.writeErrs.Add(1)
	if w.burst == 0 {
		w.log().Warn("container log write failed; dropping output until writes succeed again",
			"path", w.path, "err", err)
	}
	w.burst++
}

func (w *Writer) log() *slog.Logger {
	if w.logger != nil {
		return w.logger
	}
	return slog.Default()
}

// Flush emits the buffered unterminated tail of every stream as P records.
// The supervisor calls it when the app exits so a last line without a
// newline is not lost.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("flush crilog %s: %w", w.path, os.ErrClosed)
	}
	w.flushLocked()
	return nil
}

func (w *Writer) flushLocked() {
	for i := range w.streams {
		st := &w.streams[i]
		if len(st.buf) == 0 {
			continue
		}
		var rb recordBuf
		w.start(&rb, i)
		w.emit(&rb, 'P', st.buf)
		st.reset()
		w.finish(&rb)
	}
}

// WriteErrors returns how many record writes have failed since NewWriter.
func (w *Writer) WriteErrors() uint64 { return w.writeErrs.Load() }

// Reopen reopens the file at the writer's path. kubelet rotates a log by
// renaming it and then asking the runtime to reopen: every record written
// before Reopen took the lock is in the old (renamed) file, every later one
// in the new file, and none is written twice. Complete records are never
// held in memory, so there is nothing to move; unterminated tails stay
// buffered and continue in the new file, keeping lines whole. If the new
// file cannot be opened the writer keeps the old one and returns the error.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("reopen crilog %s: %w", w.path, os.ErrClosed)
	}
	f, err := openLog(w.dir, w.path)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	old := w.f
	w.f = f
	// A torn record belongs to the old file; the new one starts clean.
	w.torn = false
	if err := old.Close(); err != nil {
		return fmt.Errorf("reopen crilog %s: close old file: %w", w.path, err)
	}
	return nil
}

// Close flushes the unterminated tails and closes the file. Writes after
// Close fail with an error wrapping os.ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.flushLocked()
	w.closed = true
	if w.dir != nil {
		w.dir.Close()
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close crilog %s: %w", w.path, err)
	}
	return nil
}
