package fanout

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func payload(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// writeChunks writes data in random-sized chunks.
func writeChunks(w io.Writer, data []byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(40000))
		w.Write(data[:n])
		data = data[n:]
	}
}

func TestSubscribersSeeIdenticalBytes(t *testing.T) {
	// A small buffer forces wrap-around and growth of the rings; readers
	// keep up, so nobody is dropped as long as Write paces itself.
	b := NewBroadcaster(64 << 10)
	data := payload(4<<20, 1)
	var wg sync.WaitGroup
	got := make([][]byte, 2)
	ready := make(chan struct{}, 2)
	for i := range got {
		r := b.Subscribe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready <- struct{}{}
			buf := make([]byte, 1000+i*3000)
			for {
				n, err := r.Read(buf)
				got[i] = append(got[i], buf[:n]...)
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
					return
				}
			}
		}()
	}
	<-ready
	<-ready
	rng := rand.New(rand.NewPCG(2, 2))
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(16<<10))
		b.Write(rest[:n])
		rest = rest[n:]
		// Pace the writer so that a reader on a busy race-detector run
		// is not dropped: here we test content, not slowness.
		for b.Subscribers() == 2 && pending(b) > 32<<10 {
			time.Sleep(50 * time.Microsecond)
		}
	}
	if b.Subscribers() != 2 {
		t.Fatalf("a subscriber was dropped")
	}
	b.Close()
	wg.Wait()
	for i := range got {
		if !bytes.Equal(got[i], data) {
			t.Fatalf("subscriber %d got %d bytes, differing from the %d written", i, len(got[i]), len(data))
		}
	}
}

// pending is the most any subscriber has buffered.
func pending(b *Broadcaster) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := 0
	for _, s := range b.subs {
		s.mu.Lock()
		m = max(m, s.n)
		s.mu.Unlock()
	}
	return m
}

func TestStuckSubscriberIsDropped(t *testing.T) {
	b := NewBroadcaster(1 << 20)
	stuck := b.Subscribe()
	live := b.Subscribe()
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(&got, live)
		done <- err
	}()
	data := payload(10<<20, 3)
	// The writer must finish although nobody reads stuck: no deadline is
	// needed, a block would hang the test.
	writeChunks(&pacedWriter{b: b, live: live.(*sub)}, data, 4)
	if n := b.Subscribers(); n != 1 {
		t.Fatalf("%d subscribers after the stuck one overflowed, want 1", n)
	}
	if _, err := stuck.Read(make([]byte, 10)); !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("stuck reader: %v, want ErrSlowConsumer", err)
	}
	b.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("live subscriber got %d bytes of %d", got.Len(), len(data))
	}
	stuck.Close()
}

// pacedWriter waits for the live subscriber to drain before each write,
// keeping it from being dropped, but never waits for the stuck one.
// pacedWriter waits for the live subscriber to drain before each write,
// so only the stuck one can overflow however the scheduler runs the
// reader (on a loaded machine it may not run for a while).
type pacedWriter struct {
	b    *Broadcaster
	live *sub
}

func (w *pacedWriter) Write(p []byte) (int, error) {
	for {
		w.live.mu.Lock()
		busy := w.live.n > 0
		w.live.mu.Unlock()
		if !busy {
			break
		}
		time.Sleep(20 * time.Microsecond)
	}
	return w.b.Write(p)
}

func TestWriteNeverBlocks(t *testing.T) {
	b := NewBroadcaster(1 << 20)
	stuck := b.Subscribe()
	defer stuck.Close()
	chunk := make([]byte, 32<<10)
	for i := 0; i < 320; i++ { // 10 MiB
		if n, err := b.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if _, err := stuck.Read(chunk); !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("stuck reader: %v", err)
	}
}

func TestCloseDrainsThenEOF(t *testing.T) {
	b := NewBroadcaster(0)
	r := b.Subscribe()
	b.Write([]byte("hello "))
	b.Write([]byte("world"))
	b.Close()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "hello world" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	late := b.Subscribe()
	if n, err := late.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("subscribe after close: %d, %v", n, err)
	}
}

func TestSubscribeSeesOnlyLaterBytes(t *testing.T) {
	b := NewBroadcaster(0)
	b.Write([]byte("before"))
	r := b.Subscribe()
	b.Write([]byte("after"))
	buf := make([]byte, 100)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "after" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
}

func TestCloseSubscriberWakesRead(t *testing.T) {
	b := NewBroadcaster(0)
	r := b.Subscribe()
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	r.Close()
	if err := <-errc; err == nil {
		t.Fatal("Read after Close returned no error")
	}
	if b.Subscribers() != 0 {
		t.Fatalf("%d subscribers after Close", b.Subscribers())
	}
	b.Write([]byte("nobody listens"))
}

func TestRingWrapAndShrink(t *testing.T) {
	b := NewBroadcaster(200 << 10)
	r := b.Subscribe()
	s := r.(*sub)
	var want, got []byte
	buf := make([]byte, 7000)
	for i := 0; i < 200; i++ {
		p := payload(1+i*997%90000, uint64(i))
		if _, err := b.Write(p); err != nil || b.Subscribers() != 1 {
			t.Fatalf("write %d: %v, %d subscribers", i, err, b.Subscribers())
		}
		want = append(want, p...)
		// Read some but not all, so the ring wraps.
		for s.n > 100<<10 || (i == 199 && s.n > 0) {
			n, err := r.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, buf[:n]...)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d, equal prefix %v", len(got), len(want), bytes.HasPrefix(want, got))
	}
	// Once the flood is over, trickles shrink the ring back.
	grown := len(s.ring)
	for i := 0; i < 10; i++ {
		b.Write([]byte("tick"))
		if n, err := r.Read(buf); err != nil || string(buf[:n]) != "tick" {
			t.Fatalf("Read = %q, %v", buf[:n], err)
		}
	}
	if grown <= keepRing || len(s.ring) > keepRing {
		t.Fatalf("ring grew to %d and shrank to %d bytes; want > %d then <= %d", grown, len(s.ring), keepRing, keepRing)
	}
}

func TestPumpPipe(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := NewBroadcaster(0)
	sub := b.Subscribe()
	var log bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Pump(&log, b, pr) }()
	data := payload(1<<20, 9)
	var attached bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(&attached, sub); copied <- err }()
	writeChunks(pw, data, 10)
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(log.Bytes(), data) || !bytes.Equal(attached.Bytes(), data) {
		t.Fatalf("log %d bytes, attached %d, want %d", log.Len(), attached.Len(), len(data))
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk on fire")
}

type eioReader struct{ data []byte }

func (r *eioReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, &os.PathError{Op: "read", Path: "/dev/ptmx", Err: syscall.EIO}
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestPumpKeepsDrainingWhenLogFails(t *testing.T) {
	b := NewBroadcaster(0)
	sub := b.Subscribe()
	var fw failWriter
	data := payload(100<<10, 11)
	err := Pump(&fw, b, &eioReader{data: data})
	if err == nil || fw.n != 1 {
		t.Fatalf("Pump = %v after %d log writes; want the log error, reported once", err, fw.n)
	}
	b.Close()
	got, _ := io.ReadAll(sub)
	if !bytes.Equal(got, data) {
		t.Fatalf("attached got %d bytes, want %d", len(got), len(data))
	}
}

// TestPumpPtyEIO reads a real pty master after the slave side closed.
func TestPumpPtyEIO(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	rc, _ := master.SyscallConn()
	var ptn int
	var ioErr error
	rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
			ptn, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if ioErr != nil {
		t.Skipf("pty setup: %v", ioErr)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", ptn), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty slave: %v", err)
	}
	var log bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Pump(&log, nil, master) }()
	slave.Write([]byte("hello pty\n"))
	time.Sleep(20 * time.Millisecond)
	slave.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Pump = %v, want nil at EIO", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pump did not end after the slave closed")
	}
	if log.String() != "hello pty\r\n" {
		t.Fatalf("log = %q", log.String())
	}
}

func TestWriteNoSubscribersAllocFree(t *testing.T) {
	b := NewBroadcaster(0)
	p := make([]byte, 32<<10)
	if a := testing.AllocsPerRun(1000, func() { b.Write(p) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

func BenchmarkBroadcaster(b *testing.B) {
	for _, n := range []int{0, 2} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			br := NewBroadcaster(0)
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				r := br.Subscribe()
				wg.Add(1)
				go func() {
					defer wg.Done()
					io.Copy(io.Discard, r)
				}()
			}
			p := make([]byte, 32<<10)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			// Readers run concurrently; the writer yields while one is
			// half its buffer behind, so the figure is the sustained rate
			// with everyone keeping up rather than the cost of dropping.
			for b.Loop() {
				br.Write(p)
				for n > 0 && pending(br) > DefaultBufSize/2 {
					runtime.Gosched()
				}
			}
			b.ReportMetric(float64(n-br.Subscribers()), "dropped")
			br.Close()
			wg.Wait()
		})
	}
}
