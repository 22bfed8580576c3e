package stream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/runclet/runclet/internal/errdefs"
)

func TestFrameRoundTrip(t *testing.T) {
	var conn bytes.Buffer
	frames := []struct {
		t FrameType
		p []byte
	}{
		{Stdout, []byte("hello")},
		{StdinClose, nil},
		{Stderr, bytes.Repeat([]byte{0xff}, 70000)},
		{Resize, EncodeResize(80, 24)},
		{Exit, EncodeExit(3, "")},
		{Stdin, make([]byte, MaxPayload)},
	}
	for _, f := range frames {
		if err := WriteFrame(&conn, f.t, f.p); err != nil {
			t.Fatal(err)
		}
	}
	// The exact header layout is the contract.
	if got := conn.Bytes()[:10]; !bytes.Equal(got, []byte{1, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}) {
		t.Fatalf("first frame bytes % x", got)
	}
	buf := make([]byte, 16)
	for i, f := range frames {
		typ, p, err := ReadFrame(&conn, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != f.t || !bytes.Equal(p, f.p) {
			t.Fatalf("frame %d: got %s/%d bytes, want %s/%d", i, typ, len(p), f.t, len(f.p))
		}
		if cap(p) > cap(buf) {
			buf = p[:cap(p)]
		}
	}
	if _, _, err := ReadFrame(&conn, buf); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestFrameLimits(t *testing.T) {
	if err := WriteFrame(io.Discard, Stdout, make([]byte, MaxPayload+1)); !errors.Is(err, ErrTooLarge) || !errdefs.IsInvalidArgument(err) {
		t.Fatalf("oversized write: %v", err)
	}
	hdr := []byte{byte(Stdout), 0, 0x10, 0, 1} // MaxPayload+1
	if _, _, err := ReadFrame(bytes.NewReader(hdr), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized read: %v", err)
	}
	// Truncated inside the header and inside the payload.
	for _, b := range [][]byte{{1, 0, 0}, {1, 0, 0, 0, 9, 'a'}} {
		if _, _, err := ReadFrame(bytes.NewReader(b), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("truncated % x: %v", b, err)
		}
	}
}

func TestFrameWriterSplitsAndSerialises(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	var mu sync.Mutex
	out := NewFrameWriter(client, &mu, Stdout)
	errw := NewFrameWriter(client, &mu, Stderr)
	big := bytes.Repeat([]byte("b"), MaxPayload+10)
	go func() {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				fmt.Fprintf(out, "out %d\n", i)
			}
			out.Write(big)
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				fmt.Fprintf(errw, "err %d\n", i)
			}
		}()
		wg.Wait()
		client.Close()
	}()
	var gotOut, gotErr bytes.Buffer
	if err := Demux(server, Handlers{Stdout: &gotOut, Stderr: &gotErr}); err != nil {
		t.Fatal(err)
	}
	var wantOut, wantErr strings.Builder
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&wantOut, "out %d\n", i)
		fmt.Fprintf(&wantErr, "err %d\n", i)
	}
	wantOut.Write(big)
	if gotOut.String() != wantOut.String() || gotErr.String() != wantErr.String() {
		t.Fatalf("stdout %d bytes (want %d), stderr %q", gotOut.Len(), wantOut.Len(), gotErr.String()[:40])
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, io.ErrClosedPipe
}

func TestDemuxDispatch(t *testing.T) {
	var conn bytes.Buffer
	WriteFrame(&conn, Stdin, []byte("abc"))
	WriteFrame(&conn, Resize, EncodeResize(132, 43))
	WriteFrame(&conn, Stdin, []byte("def"))
	WriteFrame(&conn, StdinClose, nil)
	WriteFrame(&conn, Stdout, []byte("out"))
	WriteFrame(&conn, Stderr, []byte("err"))
	WriteFrame(&conn, Detach, nil)
	WriteFrame(&conn, Exit, EncodeExit(-1, "exec failed: no such file"))

	var stdin, stdout, stderr bytes.Buffer
	var events []string
	h := Handlers{
		Stdin: &stdin, Stdout: &stdout, Stderr: &stderr,
		Resize:     func(w, h uint16) { events = append(events, fmt.Sprintf("resize %dx%d", w, h)) },
		StdinClose: func() { events = append(events, "stdin-close") },
		Exit:       func(code int, msg string) { events = append(events, fmt.Sprintf("exit %d %s", code, msg)) },
		Detach:     func() { events = append(events, "detach") },
	}
	if err := Demux(bytes.NewReader(conn.Bytes()), h); err != nil {
		t.Fatal(err)
	}
	want := []string{"resize 132x43", "stdin-close", "detach", "exit -1 exec failed: no such file"}
	if stdin.String() != "abcdef" || stdout.String() != "out" || stderr.String() != "err" || fmt.Sprint(events) != fmt.Sprint(want) {
		t.Fatalf("stdin %q stdout %q stderr %q events %q", stdin.String(), stdout.String(), stderr.String(), events)
	}

	// Nil handlers ignore their frames; a one-byte-at-a-time reader is fine.
	if err := Demux(iotest.OneByteReader(bytes.NewReader(conn.Bytes())), Handlers{}); err != nil {
		t.Fatal(err)
	}

	// A stdin that fails closes stdin once and the session goes on.
	var fw failingWriter
	closes := 0
	stdout.Reset()
	err := Demux(bytes.NewReader(conn.Bytes()), Handlers{Stdin: &fw, Stdout: &stdout, StdinClose: func() { closes++ }})
	if err != nil || fw.n != 1 || closes != 1 || stdout.String() != "out" {
		t.Fatalf("failing stdin: err %v, %d writes, %d closes, stdout %q", err, fw.n, closes, stdout.String())
	}

	// A failing stdout ends the session with the error.
	if err := Demux(bytes.NewReader(conn.Bytes()), Handlers{Stdout: &failingWriter{}}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("failing stdout: %v", err)
	}
}

func TestDemuxProtocolErrors(t *testing.T) {
	for name, frame := range map[string][]byte{
		"unknown type": {9, 0, 0, 0, 0},
		"short resize": {byte(Resize), 0, 0, 0, 2, 0, 80},
		"bad exit":     {byte(Exit), 0, 0, 0, 1, '{'},
		"truncated":    {byte(Stdout), 0, 0, 0, 5, 'a'},
	} {
		err := Demux(bytes.NewReader(frame), Handlers{})
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if name != "truncated" && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v is not invalid argument", name, err)
		}
	}
}

func TestParseDetachKeys(t *testing.T) {
	good := map[string][]byte{
		"ctrl-p,ctrl-q": {0x10, 0x11},
		"CTRL-A,x":      {0x01, 'x'},
		"ctrl-@,ctrl-[": {0, 27},
		`ctrl-\,ctrl-_`: {28, 31},
		"":              nil,
	}
	for spec, want := range good {
		got, err := ParseDetachKeys(spec)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q: %v, %v; want % x", spec, got, err, want)
		}
	}
	for _, spec := range []string{"ctrl-", "ctrl-1", "ab", "ctrl-p,,ctrl-q", "alt-x"} {
		if _, err := ParseDetachKeys(spec); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want invalid argument", spec, err)
		}
	}
}

// chunkReader returns its chunks one Read at a time.
type chunkReader struct{ chunks []string }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func TestDetachReader(t *testing.T) {
	keys, _ := ParseDetachKeys(DefaultDetachKeys) // \x10 \x11
	cases := []struct {
		name   string
		chunks []string
		want   string
		detach bool
	}{
		{"plain", []string{"hello", " world"}, "hello world", false},
		{"in one read", []string{"ls\n\x10\x11after"}, "ls\n", true},
		{"split across reads", []string{"ab\x10", "\x11cd"}, "ab", true},
		{"broken sequence released", []string{"a\x10", "b"}, "a\x10b", false},
		{"repeated first key", []string{"\x10", "\x10\x11"}, "\x10", true},
		{"partial at EOF released", []string{"x\x10"}, "x\x10", false},
		{"sequence alone", []string{"\x10", "\x11"}, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetachReader(&chunkReader{chunks: append([]string(nil), tc.chunks...)}, keys)
			var got bytes.Buffer
			_, err := io.Copy(&got, d)
			if tc.detach != errors.Is(err, ErrDetached) || (!tc.detach && err != nil) {
				t.Fatalf("err = %v, detach %v", err, tc.detach)
			}
			if got.String() != tc.want {
				t.Fatalf("passed %q, want %q", got.String(), tc.want)
			}
		})
	}
	// Small reads drain the released bytes over several calls.
	d := NewDetachReader(&chunkReader{chunks: []string{"\x10", "z\x10\x11"}}, keys)
	one := make([]byte, 1)
	var got []byte
	for {
		n, err := d.Read(one)
		got = append(got, one[:n]...)
		if err != nil {
			if !errors.Is(err, ErrDetached) {
				t.Fatal(err)
			}
			break
		}
	}
	if string(got) != "\x10z" {
		t.Fatalf("byte-wise: %q", got)
	}
	// No keys: plain pass-through.
	var all bytes.Buffer
	io.Copy(&all, NewDetachReader(strings.NewReader("\x10\x11"), nil))
	if all.String() != "\x10\x11" {
		t.Fatalf("no keys: %q", all.String())
	}
}

func BenchmarkFrameWriter(b *testing.B) {
	var mu sync.Mutex
	fw := NewFrameWriter(io.Discard, &mu, Stdout)
	p := make([]byte, 32<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		fw.Write(p)
	}
}
