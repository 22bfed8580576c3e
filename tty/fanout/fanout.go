// Package fanout copies one output stream of an app (a pipe or a pty
// master) to its log and to any number of attached clients.
//
// The supervisor must never let a client slow the app down: an app blocked
// on a full pipe because someone's attach stalled is an outage. So Write
// never waits for a subscriber. Each subscriber has a bounded buffer; one
// that falls further behind is dropped with ErrSlowConsumer and everyone
// else carries on. There is no goroutine per subscriber: the subscriber's
// own Read takes bytes out of its buffer.
package fanout

import (
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
)

// DefaultBufSize is the per-subscriber buffer used when NewBroadcaster is
// given a size <= 0.
const DefaultBufSize = 1 << 20

var (
	// ErrSlowConsumer is returned by a subscriber's Read after it fell more
	// than its buffer behind the writer and was dropped.
	ErrSlowConsumer = errors.New("fanout: subscriber fell too far behind and was dropped")
	// ErrClosed is returned by Write after Close.
	ErrClosed = errors.New("fanout: broadcaster closed")
)

// minRing is the first allocation of a subscriber's buffer. A ring larger
// than keepRing is halved each time it drains after a period in which it
// was never more than a quarter full: most attach sessions see a trickle,
// and an idle client should not pin a burst-sized buffer, but a client
// that keeps up with a steady flood should not reallocate all the time.
const (
	minRing  = 4 << 10
	keepRing = 64 << 10
)

// Broadcaster copies everything written to it to every subscriber. It is
// safe for concurrent use.
type Broadcaster struct {
	bufSize int

	mu     sync.Mutex
	subs   []*sub
	closed bool

	// Mirrors of len(subs) and closed, so that Write takes no lock when
	// nobody is attached, which is nearly always.
	nsubs    atomic.Int32
	isClosed atomic.Bool
}

// NewBroadcaster returns a Broadcaster whose subscribers may each fall up to
// bufSize bytes behind (DefaultBufSize when bufSize <= 0).
func NewBroadcaster(bufSize int) *Broadcaster {
	if bufSize <= 0 {
		bufSize = DefaultBufSize
	}
	return &Broadcaster{bufSize: bufSize}
}

// Write copies p to every subscriber's buffer and drops the subscribers
// that have no room for it. It never blocks on a subscriber and returns
// len(p), nil unless the Broadcaster is closed.
func (b *Broadcaster) Write(p []byte) (int, error) {
	if b.isClosed.Load() {
		return 0, ErrClosed
	}
	if b.nsubs.Load() == 0 || len(p) == 0 {
		return len(p), nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, ErrClosed
	}
	kept := b.subs[:0]
	for _, s := range b.subs {
		if s.push(p) {
			kept = append(kept, s)
		}
	}
	clear(b.subs[len(kept):])
	b.subs = kept
	b.nsubs.Store(int32(len(kept)))
	return len(p), nil
}

// Subscribe returns a reader of everything written after the call. Read
// blocks until data arrives; it returns io.EOF after the Broadcaster is
// closed and the buffer drained, ErrSlowConsumer if the subscriber was
// dropped. Close unsubscribes and wakes a blocked Read.
func (b *Broadcaster) Subscribe() io.ReadCloser {
	s := &sub{b: b, max: b.bufSize}
	s.cond.L = &s.mu
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		s.eof = true
		return s
	}
	b.subs = append(b.subs, s)
	b.nsubs.Store(int32(len(b.subs)))
	return s
}

// Subscribers returns the number of current subscribers.
func (b *Broadcaster) Subscribers() int { return int(b.nsubs.Load()) }

// Close ends the stream: subscribers read what is buffered, then io.EOF.
// Later Writes fail with ErrClosed.
func (b *Broadcaster) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.isClosed.Store(true)
	for _, s := range b.subs {
		s.mu.Lock()
		s.eof = true
		s.cond.Broadcast()
		s.mu.Unlock()
	}
	b.subs = nil
	b.nsubs.Store(0)
	return nil
}

func (b *Broadcaster) remove(s *sub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, x := range b.subs {
		if x == s {
			b.subs = slices.Delete(b.subs, i, i+1)
			break
		}
	}
	b.nsubs.Store(int32(len(b.subs)))
}

// sub is one subscriber: a ring buffer that grows on demand up to max.
type sub struct {
	b    *Broadcaster
	max  int
	mu   sync.Mutex
	cond sync.Cond

	ring   []byte
	head   int // index of the first unread byte
	n      int // unread bytes
	peak   int // most unread bytes since the ring last drained
	eof    bool
	err    error // ErrSlowConsumer once dropped
	closed bool
}

var errReaderClosed = errors.New("fanout: read from closed subscriber")

// push appends p; false means the subscriber had no room and is dropped.
// Called with b.mu held.
func (s *sub) push(p []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.n+len(p) > s.max {
		// Dropped: its buffered bytes are discarded at once rather than
		// kept for a reader that is probably never coming back.
		s.err = ErrSlowConsumer
		s.ring, s.head, s.n = nil, 0, 0
		s.cond.Broadcast()
		return false
	}
	if need := s.n + len(p); need > len(s.ring) {
		s.grow(need)
	}
	tail := (s.head + s.n) % len(s.ring)
	c := copy(s.ring[tail:], p)
	copy(s.ring, p[c:])
	s.n += len(p)
	s.peak = max(s.peak, s.n)
	s.cond.Signal()
	return true
}

// grow reallocates the ring to at least need bytes (doubling, at most max)
// with the unread bytes moved to the front.
func (s *sub) grow(need int) {
	size := max(minRing, 2*len(s.ring))
	for size < need {
		size *= 2
	}
	size = min(size, s.max)
	r := make([]byte, size)
	if s.n > 0 {
		c := copy(r, s.ring[s.head:min(s.head+s.n, len(s.ring))])
		copy(r[c:s.n], s.ring)
	}
	s.ring, s.head = r, 0
}

func (s *sub) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.n == 0 && s.err == nil && !s.eof && !s.closed {
		s.cond.Wait()
	}
	switch {
	case s.closed:
		return 0, errReaderClosed
	case s.err != nil:
		return 0, s.err
	case s.n == 0:
		return 0, io.EOF
	}
	k := min(len(p), s.n)
	c := copy(p[:k], s.ring[s.head:min(s.head+k, len(s.ring))])
	copy(p[c:k], s.ring)
	s.head = (s.head + k) % len(s.ring)
	s.n -= k
	if s.n == 0 {
		s.head = 0
		if len(s.ring) > keepRing && s.peak <= len(s.ring)/4 {
			s.ring = make([]byte, len(s.ring)/2)
		}
		s.peak = 0
	}
	return k, nil
}

// Close unsubscribes; a Read blocked in another goroutine returns an error.
func (s *sub) Close() error {
	s.b.remove(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.ring, s.n = nil, 0
	s.cond.Broadcast()
	return nil
}
