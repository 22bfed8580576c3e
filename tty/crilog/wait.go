package crilog

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A follower wakes on inotify events for the log's directory (writes to the
// file, and the rename and create of a rotation) and, as a safety net for
// anything inotify misses, every inotifyPoll. Without inotify (no instances
// left, an exotic filesystem) it polls every pollInterval.
const (
	inotifyPoll  = time.Second
	pollInterval = 100 * time.Millisecond
)

// useInotify is switched off by tests to exercise the polling fallback.
var useInotify = true

type waiter struct {
	done   <-chan struct{}
	cancel context.CancelFunc
	ino    *os.File // nil when polling
	buf    []byte
	timer  *time.Timer
}

// newWaiter returns a waiter whose wait returns early when ctx is cancelled
// or finished is closed.
func newWaiter(ctx context.Context, dir string, finished <-chan struct{}) *waiter {
	inner, cancel := context.WithCancel(ctx)
	if finished != nil {
		go func() {
			select {
			case <-finished:
				cancel()
			case <-inner.Done():
			}
		}()
	}
	w := &waiter{done: inner.Done(), cancel: cancel}
	if !useInotify {
		return w
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return w
	}
	const mask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
		unix.IN_DELETE | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return w
	}
	// A non-blocking fd makes a pollable os.File, so reads honour deadlines
	// and Close wakes a blocked Read: cancellation needs no extra goroutine.
	ino := os.NewFile(uintptr(fd), "inotify")
	context.AfterFunc(inner, func() { ino.Close() })
	w.ino = ino
	w.buf = make([]byte, 4096)
	return w
}

// wait blocks until something may have changed, the safety-net interval
// passes, or the waiter is cancelled. Callers re-check everything after it.
func (w *waiter) wait() {
	if w.ino != nil {
		if err := w.ino.SetReadDeadline(time.Now().Add(inotifyPoll)); err == nil {
			_, err = w.ino.Read(w.buf)
			if err == nil || os.IsTimeout(err) {
				return
			}
		}
		select {
		case <-w.done: // closed by the cancellation
			return
		default: // inotify broke; fall back to polling
			w.ino.Close()
			w.ino = nil
		}
	}
	if w.timer == nil {
		w.timer = time.NewTimer(pollInterval)
	} else {
		w.timer.Reset(pollInterval)
	}
	select {
	case <-w.done:
	case <-w.timer.C:
	}
}

func (w *waiter) close() {
	w.cancel()
	if w.ino != nil {
		w.ino.Close()
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}
