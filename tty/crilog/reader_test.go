package crilog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
)

func TestParseRecord(t *testing.T) {
	good := []struct {
		line    string
		time    time.Time
		stream  Stream
		partial bool
		content string
	}{
		{"2016-10-06T00:17:09.669794202Z stdout F hello world", fixedTime, Stdout, false, "hello world"},
		{"2016-10-06T00:17:09.669794202Z stderr P  two  spaces ", fixedTime, Stderr, true, " two  spaces "},
		{"2016-10-06T00:17:09.669794202Z stdout F ", fixedTime, Stdout, false, ""},
		{"2016-10-06T00:17:09.669794202Z stdout F", fixedTime, Stdout, false, ""},
		{"2016-10-06T00:17:09.669794202Z stdout F:x:y data", fixedTime, Stdout, false, "data"},
		{"2016-10-06T00:17:09.6697942Z stdout F a", fixedTime.Add(-2), Stdout, false, "a"},
		{"2016-10-06T00:17:09Z stdout F a", fixedTime.Truncate(time.Second), Stdout, false, "a"},
		// containerd writes local time with an offset.
		{"2016-10-06T02:17:09.669794202+02:00 stdout F a", fixedTime, Stdout, false, "a"},
	}
	for _, g := range good {
		r, err := ParseRecord([]byte(g.line))
		if err != nil {
			t.Errorf("%q: %v", g.line, err)
			continue
		}
		if !r.Time.Equal(g.time) || r.Stream != g.stream || r.Partial != g.partial || string(r.Content) != g.content {
			t.Errorf("%q: got %v %s %v %q", g.line, r.Time, r.Stream, r.Partial, r.Content)
		}
	}
	bad := []string{
		"",
		"garbage",
		"2016-10-06T00:17:09.669794202Z",
		"2016-10-06T00:17:09.669794202Z stdin F a",
		"2016-10-06T00:17:09.669794202Z stdout X a",
		"2016-10-06T00:17:09.669794202Z stdout",
		"2016-13-06T00:17:09.669794202Z stdout F a",
		"2016-02-30T00:17:09Z stdout F a",
		"2016-10-06 00:17:09Z stdout F a",
	}
	for _, b := range bad {
		if _, err := ParseRecord([]byte(b)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: err = %v, want invalid argument", b, err)
		}
	}
}

func TestParseTimeMatchesStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		tm := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()
		for _, layout := range []string{timeLayout, time.RFC3339Nano, time.RFC3339} {
			s := tm.Format(layout)
			got, ok := parseUTC([]byte(s))
			want, err := time.Parse(time.RFC3339Nano, s)
			if !ok || err != nil || !got.Equal(want) {
				t.Fatalf("%s: fast %v %v, stdlib %v %v", s, got, ok, want, err)
			}
		}
	}
}

// logFile writes raw record lines to a fresh file.
func logFile(t testing.TB, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

func rec(sec int, s Stream, tag, content string) string {
	ts := fixedTime.Add(time.Duration(sec) * time.Second).Format(timeLayout)
	return fmt.Sprintf("%s %s %s %s\n", ts, s, tag, content)
}

func copyAll(t testing.TB, path string, opts ReadOptions) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := Copy(context.Background(), path, &out, &errb, opts); err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String()
}

func TestCopyJoinsPartials(t *testing.T) {
	path := logFile(t,
		rec(0, Stdout, "P", "hel"),
		rec(0, Stderr, "F", "oops"),
		rec(1, Stdout, "P", "lo "),
		"this line is not a record\n",
		rec(1, Stdout, "F", "world"),
		rec(2, Stdout, "F", ""),
		rec(3, Stderr, "P", "no newline"),
	)
	out, errs := copyAll(t, path, ReadOptions{Tail: TailAll})
	if out != "hello world\n\n" || errs != "oops\nno newline" {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
}

func TestCopyFilters(t *testing.T) {
	path := logFile(t,
		rec(0, Stdout, "F", "zero"),
		rec(1, Stderr, "F", "one"),
		rec(2, Stdout, "P", "tw"),
		rec(3, Stdout, "F", "o"),
		rec(4, Stderr, "F", "three"),
	)
	t.Run("since", func(t *testing.T) {
		// A line is kept or dropped whole, by its first record's time.
		out, errs := copyAll(t, path, ReadOptions{Tail: TailAll, Since: fixedTime.Add(2500 * time.Millisecond)})
		if out != "" || errs != "three\n" {
			t.Fatalf("stdout %q stderr %q", out, errs)
		}
		out, _ = copyAll(t, path, ReadOptions{Tail: TailAll, Since: fixedTime.Add(2 * time.Second)})
		if out != "two\n" {
			t.Fatalf("stdout %q", out)
		}
	})
	t.Run("streams", func(t *testing.T) {
		out, errs := copyAll(t, path, ReadOptions{Tail: TailAll, Streams: map[Stream]bool{Stderr: true}})
		if out != "" || errs != "one\nthree\n" {
			t.Fatalf("stdout %q stderr %q", out, errs)
		}
		var b bytes.Buffer
		if err := Copy(context.Background(), path, &b, nil, ReadOptions{Tail: TailAll}); err != nil || b.String() != "zero\ntwo\n" {
			t.Fatalf("nil stderr: %q %v", b.String(), err)
		}
	})
	t.Run("timestamps", func(t *testing.T) {
		out, _ := copyAll(t, path, ReadOptions{Tail: TailAll, Timestamps: true})
		want := "2016-10-06T00:17:09.669794202Z zero\n2016-10-06T00:17:11.669794202Z two\n"
		if out != want {
			t.Fatalf("stdout %q want %q", out, want)
		}
	})
	t.Run("limit", func(t *testing.T) {
		var b bytes.Buffer
		err := Copy(context.Background(), path, &b, &b, ReadOptions{Tail: TailAll, LimitBytes: 11})
		if err != nil || b.String() != "zero\none\ntw" {
			t.Fatalf("%q %v", b.String(), err)
		}
	})
	t.Run("tail", func(t *testing.T) {
		for n, want := range map[int]string{0: "|", 1: "|three\n", 2: "two\n|three\n", 3: "two\n|one\nthree\n", 9: "zero\ntwo\n|one\nthree\n"} {
			out, errs := copyAll(t, path, ReadOptions{Tail: n})
			if out+"|"+errs != want {
				t.Errorf("tail %d: %q, want %q", n, out+"|"+errs, want)
			}
		}
	})
	t.Run("not found", func(t *testing.T) {
		err := Copy(context.Background(), path+".nope", io.Discard, io.Discard, ReadOptions{})
		if !errdefs.IsNotFound(err) {
			t.Fatalf("err = %v", err)
		}
	})
}

// expectTail computes the last-n-lines output the slow, obvious way.
func expectTail(recs []Record, n int) (string, string) {
	type line struct {
		stream int
		end    int
		text   string
	}
	var lines []line
	var cur [2][]byte
	var open [2]bool
	for i, r := range recs {
		s := streamIndex(r.Stream)
		cur[s] = append(cur[s], r.Content...)
		open[s] = r.Partial
		if !r.Partial {
			lines = append(lines, line{s, i, string(cur[s]) + "\n"})
			cur[s] = nil
		}
	}
	for s := range 2 {
		if open[s] {
			last := 0
			for i, r := range recs {
				if streamIndex(r.Stream) == s {
					last = i
				}
			}
			lines = append(lines, line{s, last, string(cur[s])})
		}
	}
	// Order by the index of each line's last record.
	for i := 1; i < len(lines); i++ {
		for j := i; j > 0 && lines[j].end < lines[j-1].end; j-- {
			lines[j], lines[j-1] = lines[j-1], lines[j]
		}
	}
	if n < len(lines) {
		lines = lines[len(lines)-n:]
	}
	var out [2]strings.Builder
	for s := range 2 {
		for _, l := range lines { // lines of one stream are in stream order
			if l.stream == s {
				out[s].WriteString(l.text)
			}
		}
	}
	return out[0].String(), out[1].String()
}

func TestCopyTailMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 200; iter++ {
		var lines []string
		var recs []Record
		for i := 0; i < rng.IntN(40); i++ {
			s := []Stream{Stdout, Stderr}[rng.IntN(2)]
			tag := []string{"P", "F", "F"}[rng.IntN(3)]
			content := fmt.Sprintf("%c%d", 'a'+rune(i%26), i)
			l := rec(i, s, tag, content)
			lines = append(lines, l)
			r, _ := ParseRecord([]byte(strings.TrimSuffix(l, "\n")))
			recs = append(recs, r)
		}
		path := logFile(t, lines...)
		for n := 0; n <= len(recs)+1; n++ {
			out, errs := copyAll(t, path, ReadOptions{Tail: n})
			wo, we := expectTail(recs, n)
			if out != wo || errs != we {
				t.Fatalf("file:\n%stail %d: got %q / %q, want %q / %q", strings.Join(lines, ""), n, out, errs, wo, we)
			}
		}
	}
}

type countingReaderAt struct {
	r io.ReaderAt
	n int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

func TestTailReadsOnlyTheEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.log")
	w, err := NewWriter(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	// About 50 MB of 100-byte lines.
	line := strings.Repeat("q", 99) + "\n"
	chunk := []byte(strings.Repeat(line, 300))
	for i := 0; i < 1200; i++ {
		w.StreamWriter(Stdout).Write(chunk)
	}
	w.StreamWriter(Stderr).Write([]byte("the end\n"))
	w.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() < 50e6 {
		t.Fatalf("file is only %d bytes", fi.Size())
	}
	cr := &countingReaderAt{r: f}
	start, _, err := tailStart(cr, fi.Size(), 10, [2]bool{true, true})
	if err != nil {
		t.Fatal(err)
	}
	// The stderr line is the only one of its stream, so the search for its
	// earlier pieces goes on for tailLookback and no further.
	if cr.n > tailLookback+2*readChunk || fi.Size()-start > 2000 {
		t.Fatalf("tail 10 read %d bytes, start %d of %d", cr.n, start, fi.Size())
	}
	began := time.Now()
	out, errs := copyAll(t, path, ReadOptions{Tail: 10})
	if strings.Count(out, "\n") != 9 || errs != "the end\n" {
		t.Fatalf("stdout %d lines, stderr %q", strings.Count(out, "\n"), errs)
	}
	t.Logf("tail 10 of %d MB: read %d bytes, %v", fi.Size()>>20, cr.n, time.Since(began))
}

// syncBuffer is a bytes.Buffer safe for a writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCopyFollowAcrossRotation(t *testing.T) {
	t.Run("inotify", testFollowAcrossRotation)
	t.Run("polling", func(t *testing.T) {
		useInotify = false
		defer func() { useInotify = true }()
		testFollowAcrossRotation(t)
	})
}

func testFollowAcrossRotation(t *testing.T) {
	w, path := newTestWriter(t, 0)
	out := w.StreamWriter(Stdout)
	out.Write([]byte("old 1\nold 2\n"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got, gotErr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Copy(ctx, path, &got, &gotErr, ReadOptions{Follow: true, Tail: 1})
	}()
	waitFor(t, "the tail", func() bool { return got.String() == "old 2\n" })

	out.Write([]byte("new 1\nhalf "))
	waitFor(t, "an appended line", func() bool { return got.String() == "old 2\nnew 1\n" })

	// Rotate while a line is half written: the rest lands in the new file.
	var want, wantErr strings.Builder
	want.WriteString("old 2\nnew 1\n")
	for r := 0; r < 3; r++ {
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, r)); err != nil {
			t.Fatal(err)
		}
		out.Write([]byte(fmt.Sprintf("before reopen %d\n", r)))
		if err := w.Reopen(); err != nil {
			t.Fatal(err)
		}
		w.StreamWriter(Stderr).Write([]byte(fmt.Sprintf("after reopen %d\n", r)))
		// A follower sees each file only if it gets to it before the next
		// rotation (as with kubelet); let it catch up.
		fmt.Fprintf(&wantErr, "after reopen %d\n", r)
		waitFor(t, "the reopened file", func() bool { return gotErr.String() == wantErr.String() })
	}
	out.Write([]byte("line\n"))
	want.WriteString("half before reopen 0\nbefore reopen 1\nbefore reopen 2\nline\n")
	waitFor(t, "lines after rotation", func() bool { return got.String() == want.String() })

	// Truncation in place (copytruncate) is followed too.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	out.Write([]byte("after truncate\n"))
	want.WriteString("after truncate\n")
	waitFor(t, "a line after truncation", func() bool { return got.String() == want.String() })

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Copy returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Copy did not stop on cancel")
	}
}

func TestCopyFollowFinished(t *testing.T) {
	w, path := newTestWriter(t, 0)
	finished := make(chan struct{})
	var got syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Copy(context.Background(), path, &got, nil,
			ReadOptions{Follow: true, Tail: TailAll, Finished: finished})
	}()
	sw := w.StreamWriter(Stdout)
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(sw, "line %d\n", i)
	}
	sw.Write([]byte("last words"))
	w.Close()
	close(finished)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Copy did not return after Finished")
	}
	s := got.String()
	if strings.Count(s, "\n") != 1000 || !strings.HasSuffix(s, "line 999\nlast words") {
		t.Fatalf("got %d lines, ending %q", strings.Count(s, "\n"), s[max(0, len(s)-30):])
	}
}

func TestCopyCancelledWithoutFollow(t *testing.T) {
	path := logFile(t, strings.Repeat(rec(0, Stdout, "F", "x"), 5000))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Copy(ctx, path, io.Discard, io.Discard, ReadOptions{Tail: TailAll}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func BenchmarkCopy(b *testing.B) {
	path := filepath.Join(b.TempDir(), "0.log")
	w, _ := NewWriter(path, 0)
	chunk := []byte(strings.Repeat(strings.Repeat("r", 99)+"\n", 300))
	for i := 0; i < 100; i++ {
		w.StreamWriter(Stdout).Write(chunk)
	}
	w.Close()
	b.SetBytes(int64(len(chunk) * 100))
	b.ReportAllocs()
	for b.Loop() {
		if err := Copy(context.Background(), path, io.Discard, io.Discard, ReadOptions{Tail: TailAll}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCopySurvivesHugeGarbageLine(t *testing.T) {
	garbage := strings.Repeat("g", maxRecord+maxRecord/2) + "\n"
	path := logFile(t,
		rec(0, Stdout, "F", "before"),
		garbage,
		rec(1, Stderr, "F", "after"),
		rec(2, Stdout, "F", "last"),
	)
	out, errs := copyAll(t, path, ReadOptions{Tail: TailAll})
	if out != "before\nlast\n" || errs != "after\n" {
		t.Fatalf("all: %q / %q", out, errs)
	}
	out, errs = copyAll(t, path, ReadOptions{Tail: 3})
	if out != "before\nlast\n" || errs != "after\n" {
		t.Fatalf("tail 3: %q / %q", out, errs)
	}
	// A record being written at the end (no newline yet) is neither counted
	// by the tail nor copied.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(strings.TrimSuffix(rec(3, Stdout, "F", "torn"), "\n"))
	f.Close()
	out, _ = copyAll(t, path, ReadOptions{Tail: 1})
	if out != "last\n" {
		t.Fatalf("tail 1 with a torn end: %q", out)
	}
}
