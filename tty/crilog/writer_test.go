package crilog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runclet/runclet/internal/testutil"
)

var fixedTime = time.Date(2016, 10, 6, 0, 17, 9, 669794202, time.UTC)

func newTestWriter(t testing.TB, maxLine int) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := NewWriter(path, maxLine)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, path
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readRecords parses every record of the files, in order.
func readRecords(t testing.TB, paths ...string) []Record {
	t.Helper()
	var out []Record
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			r, err := ParseRecord(sc.Bytes())
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			r.Content = bytes.Clone(r.Content)
			out = append(out, r)
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return out
}

func TestWriterExactFormat(t *testing.T) {
	w, path := newTestWriter(t, 0)
	w.now = func() time.Time { return fixedTime.In(time.FixedZone("CEST", 2*3600)) }
	out, errw := w.StreamWriter(Stdout), w.StreamWriter(Stderr)
	if n, err := out.Write([]byte("hello world\n")); n != 12 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	errw.Write([]byte("a\n\nb\n"))
	w.now = func() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) }
	out.Write([]byte("x\n"))
	want := "2016-10-06T00:17:09.669794202Z stdout F hello world\n" +
		"2016-10-06T00:17:09.669794202Z stderr F a\n" +
		"2016-10-06T00:17:09.669794202Z stderr F \n" +
		"2016-10-06T00:17:09.669794202Z stderr F b\n" +
		"2024-01-02T03:04:05.000000000Z stdout F x\n"
	if got := readFile(t, path); got != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriterSplitsLongLines(t *testing.T) {
	const max = 16 << 10
	line := make([]byte, 100<<10)
	for i := range line {
		line[i] = 'a' + byte(i%26)
	}
	// 102400 = 6*16384 + 4096: six full P records and the rest as F,
	// whatever the chunking of the writes.
	for _, chunk := range []int{len(line) + 1, 1000, 7, max, max + 1} {
		t.Run(strconv.Itoa(chunk), func(t *testing.T) {
			w, path := newTestWriter(t, max)
			data := append(bytes.Clone(line), '\n')
			for len(data) > 0 {
				n := min(chunk, len(data))
				w.StreamWriter(Stdout).Write(data[:n])
				data = data[n:]
			}
			recs := readRecords(t, path)
			if len(recs) != 7 {
				t.Fatalf("%d records, want 7", len(recs))
			}
			var joined []byte
			for i, r := range recs {
				wantLen, wantP := max, true
				if i == 6 {
					wantLen, wantP = 4096, false
				}
				if len(r.Content) != wantLen || r.Partial != wantP || r.Stream != Stdout {
					t.Fatalf("record %d: len %d partial %v stream %s", i, len(r.Content), r.Partial, r.Stream)
				}
				joined = append(joined, r.Content...)
			}
			if !bytes.Equal(joined, line) {
				t.Fatal("joined content differs from the line")
			}
		})
	}
}

func TestWriterSplitBoundaries(t *testing.T) {
	const max = 8
	cases := []struct {
		in   string
		want []string // "P:content" / "F:content"
	}{
		{"12345678\n", []string{"F:12345678"}},
		{"123456789\n", []string{"P:12345678", "F:9"}},
		{"1234567812345678\n", []string{"P:12345678", "F:12345678"}},
		{"\n", []string{"F:"}},
	}
	for _, tc := range cases {
		// Byte by byte exercises the buffered-tail path; whole is the fast path.
		for _, bytewise := range []bool{false, true} {
			w, path := newTestWriter(t, max)
			sw := w.StreamWriter(Stderr)
			if bytewise {
				for i := 0; i < len(tc.in); i++ {
					sw.Write([]byte{tc.in[i]})
				}
			} else {
				sw.Write([]byte(tc.in))
			}
			var got []string
			for _, r := range readRecords(t, path) {
				tag := "F:"
				if r.Partial {
					tag = "P:"
				}
				got = append(got, tag+string(r.Content))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("%q bytewise=%v: got %q, want %q", tc.in, bytewise, got, tc.want)
			}
		}
	}
}

func TestWriterFlushAndClose(t *testing.T) {
	w, path := newTestWriter(t, 0)
	out, errw := w.StreamWriter(Stdout), w.StreamWriter(Stderr)
	out.Write([]byte("one\ntw"))
	errw.Write([]byte("e"))
	if got := readRecords(t, path); len(got) != 1 || string(got[0].Content) != "one" {
		t.Fatalf("before flush: %+v", got)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	out.Write([]byte("o\n"))
	errw.Write([]byte("nd"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range readRecords(t, path) {
		got = append(got, fmt.Sprintf("%s %v %s", r.Stream, r.Partial, r.Content))
	}
	want := []string{"stdout false one", "stdout true tw", "stderr true e", "stdout false o", "stderr true nd"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if _, err := out.Write([]byte("late\n")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := w.Reopen(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("reopen after close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestWriterUnknownStream(t *testing.T) {
	w, _ := newTestWriter(t, 0)
	if _, err := w.StreamWriter("stdin").Write([]byte("x")); err == nil {
		t.Fatal("unknown stream accepted")
	}
}

// genLine makes line i of a stream: a sequence number and filler of a
// length that varies, sometimes beyond maxLine.
func genLine(s Stream, i int, max int) string {
	n := (i * 7919) % 300
	if i%97 == 0 {
		n = max*2 + 13
	}
	return fmt.Sprintf("%s-%d-%s", s, i, strings.Repeat("x", n))
}

// checkLines joins the records of each stream into lines and checks that
// they are exactly genLine(0..n-1) in order.
func checkLines(t *testing.T, recs []Record, n map[Stream]int, max int) {
	t.Helper()
	cur := map[Stream][]byte{}
	next := map[Stream]int{}
	for _, r := range recs {
		if len(r.Content) > max {
			t.Fatalf("record of %d bytes > maxLine %d", len(r.Content), max)
		}
		cur[r.Stream] = append(cur[r.Stream], r.Content...)
		if r.Partial {
			continue
		}
		want := genLine(r.Stream, next[r.Stream], max)
		if string(cur[r.Stream]) != want {
			t.Fatalf("%s line %d: got %.60q want %.60q", r.Stream, next[r.Stream], cur[r.Stream], want)
		}
		next[r.Stream]++
		cur[r.Stream] = cur[r.Stream][:0]
	}
	for s, want := range n {
		if next[s] != want || len(cur[s]) != 0 {
			t.Fatalf("%s: %d lines (pending %d bytes), want %d", s, next[s], len(cur[s]), want)
		}
	}
}

// produce writes n lines to sw in randomly sized chunks that cut lines
// anywhere, as reads from a pipe do.
func produce(sw io.Writer, s Stream, n, max int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	var buf []byte
	for i := 0; i < n; i++ {
		buf = append(buf, genLine(s, i, max)...)
		buf = append(buf, '\n')
		for len(buf) > 4096 || (i == n-1 && len(buf) > 0) {
			k := min(len(buf), 1+rng.IntN(8192))
			sw.Write(buf[:k])
			buf = buf[k:]
		}
		buf = append([]byte(nil), buf...)
	}
}

func TestWriterConcurrentStreams(t *testing.T) {
	const max, n = 512, 20000
	w, path := newTestWriter(t, max)
	var wg sync.WaitGroup
	for i, s := range []Stream{Stdout, Stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			produce(w.StreamWriter(s), s, n, max, uint64(i))
		}()
	}
	wg.Wait()
	w.Close()
	checkLines(t, readRecords(t, path), map[Stream]int{Stdout: n, Stderr: n}, max)
}

func TestWriterReopenDuringRotation(t *testing.T) {
	const max, n, rotations = 1024, 30000, 20
	w, path := newTestWriter(t, max)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, s := range []Stream{Stdout, Stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			produce(w.StreamWriter(s), s, n, max, uint64(i+7))
		}()
	}
	var files []string
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for r := 0; r < rotations; r++ {
		// Rotate as kubelet does: rename, then ask for a reopen.
		rotated := fmt.Sprintf("%s.%02d", path, r)
		if err := os.Rename(path, rotated); err != nil {
			t.Fatal(err)
		}
		files = append(files, rotated)
		if err := w.Reopen(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("after Reopen: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	<-done
	w.Close()
	files = append(files, path)
	recs := readRecords(t, files...)
	checkLines(t, recs, map[Stream]int{Stdout: n, Stderr: n}, max)
	nonEmpty := 0
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Size() > 0 {
			nonEmpty++
		}
	}
	t.Logf("%d records over %d files (%d non-empty)", len(recs), len(files), nonEmpty)
	if nonEmpty < 3 {
		t.Fatalf("rotation did not interleave with writing: %d non-empty files", nonEmpty)
	}
}

// fullDir is a directory on a tmpfs with no free block left: files can
// be made there, and every write to them fails with ENOSPC. (/dev/full,
// which did this before, is no regular file, and the writer refuses
// anything else.)
func fullDir(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t, "mounts a full tmpfs to make log writes fail")
	d := t.TempDir()
	if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(d, syscall.MNT_DETACH) })
	f, err := os.Create(filepath.Join(d, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			return d
		}
	}
}

func TestWriterWriteErrorsCounted(t *testing.T) {
	w, err := NewWriter(filepath.Join(fullDir(t), "ctr.log"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var logged bytes.Buffer
	w.SetLogger(slog.New(slog.NewTextHandler(&logged, nil)))
	sw := w.StreamWriter(Stdout)
	for i := 0; i < 10; i++ {
		if n, err := sw.Write([]byte("lost line\n")); n != 10 || err != nil {
			t.Fatalf("Write = %d, %v; want the data dropped silently", n, err)
		}
	}
	sw.Write([]byte("partial"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := w.WriteErrors(); got != 11 {
		t.Fatalf("WriteErrors = %d, want 11", got)
	}
	// One report per burst, not one per failed write.
	if n := strings.Count(logged.String(), "\n"); n != 1 || !strings.Contains(logged.String(), "no space left") {
		t.Fatalf("log:\n%s", logged.String())
	}
}

func TestWriterNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	w, _ := newTestWriter(t, 0)
	sw := w.StreamWriter(Stdout)
	chunk := bytes.Repeat([]byte(strings.Repeat("y", 99)+"\n"), 300)
	chunk = append(chunk, "tail"...)
	sw.Write(chunk) // warm the pool and the tail buffer
	allocs := testing.AllocsPerRun(100, func() { sw.Write(chunk) })
	if allocs > 0 {
		t.Fatalf("%.1f allocations per Write", allocs)
	}
}

func BenchmarkWriter(b *testing.B) {
	w, _ := newTestWriter(b, 0)
	sw := w.StreamWriter(Stdout)
	// A 32 KiB read of 100-byte lines, as a pipe copier delivers them.
	line := strings.Repeat("z", 99) + "\n"
	chunk := []byte(strings.Repeat(line, 32<<10/len(line)))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		sw.Write(chunk)
	}
}

func BenchmarkWriterSmallWrites(b *testing.B) {
	w, _ := newTestWriter(b, 0)
	sw := w.StreamWriter(Stdout)
	// One line per Write: an app that flushes after every line.
	line := []byte(strings.Repeat("z", 99) + "\n")
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		sw.Write(line)
	}
}

// tornFile fails its second write after writing half of it, as a write(2)
// that hits ENOSPC midway does.
type tornFile struct {
	bytes.Buffer
	writes int
}

func (f *tornFile) Write(p []byte) (int, error) {
	f.writes++
	if f.writes == 2 {
		f.Buffer.Write(p[:len(p)/2])
		return len(p) / 2, syscall.ENOSPC
	}
	return f.Buffer.Write(p)
}

func (f *tornFile) Close() error { return nil }

func TestWriterRecoversFromTornWrite(t *testing.T) {
	w, _ := newTestWriter(t, 0)
	w.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	var f tornFile
	w.f.Close()
	w.f = &f
	sw := w.StreamWriter(Stdout)
	sw.Write([]byte("one\n"))
	sw.Write([]byte("two two two two\n"))
	sw.Write([]byte("three\n"))
	var got []string
	for _, line := range strings.SplitAfter(f.String(), "\n") {
		if r, err := ParseRecord([]byte(strings.TrimSuffix(line, "\n"))); err == nil {
			got = append(got, string(r.Content))
		}
	}
	// The torn record is lost (it may parse with a cut content, or not),
	// but the next record is intact on a line of its own.
	if len(got) < 2 || got[0] != "one" || got[len(got)-1] != "three" || w.WriteErrors() != 1 {
		t.Fatalf("records %q, errors %d; file:\n%s", got, w.WriteErrors(), f.String())
	}
}

// BenchmarkWriterFormatOnly writes to /dev/null: the writer's own cost
// without the filesystem's.
func BenchmarkWriterFormatOnly(b *testing.B) {
	w, err := NewWriter("/dev/null", 0)
	if err != nil {
		b.Skip(err)
	}
	defer w.Close()
	sw := w.StreamWriter(Stdout)
	line := strings.Repeat("z", 99) + "\n"
	chunk := []byte(strings.Repeat(line, 32<<10/len(line)))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		sw.Write(chunk)
	}
}

// Whoever can write the pod's log directory plants a symlink where the
// container's log goes: neither the first open nor a reopen after
// rotation may write through it, and a directory swapped for a symlink
// after the start does not move the log either.
func TestWriterRefusesSymlinkedLogFile(t *testing.T) {
	base := t.TempDir()
	logDir := filepath.Join(base, "app")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(logDir, "0.log")
	if err := os.Symlink(victim, logPath); err != nil {
		t.Fatal(err)
	}
	if w, err := NewWriter(logPath, 0); err == nil {
		w.StreamWriter(Stdout).Write([]byte("redirected\n"))
		w.Close()
		t.Fatal("NewWriter opened a symlinked log file")
	}
	os.Remove(logPath)
	// A hard link to a file elsewhere is refused too.
	if err := os.Link(victim, logPath); err != nil {
		t.Fatal(err)
	}
	if w, err := NewWriter(logPath, 0); err == nil {
		w.Close()
		t.Fatal("NewWriter opened a hard-linked log file")
	}
	os.Remove(logPath)

	w, err := NewWriter(logPath, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out := w.StreamWriter(Stdout)
	out.Write([]byte("one\n"))
	// Rotation: the file is moved away and a symlink takes its place.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, logPath); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err == nil {
		t.Fatal("Reopen followed a symlink")
	}
	out.Write([]byte("two\n")) // still to the old (rotated) file
	os.Remove(logPath)
	// The log directory itself becomes a symlink to elsewhere.
	if err := os.Rename(logDir, logDir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, logDir); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	out.Write([]byte("three\n"))
	if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
		t.Fatalf("victim file now holds %q", got)
	}
	if _, err := os.Stat(filepath.Join(base, "0.log")); err == nil {
		t.Fatal("reopen followed the swapped log directory")
	}
	if got, _ := os.ReadFile(filepath.Join(logDir+".old", "0.log")); !bytes.Contains(got, []byte("three")) {
		t.Fatalf("new log in the original directory holds %q", got)
	}
}
