package fanout

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ChunkSize is the most Pump reads from its source at once.
const ChunkSize = 32 << 10

// chunkPool is shared by every Pump in the process. Pump takes a buffer
// only once the source is readable and returns it right after delivering,
// so the many idle streams of a pod hold no buffer at all.
var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, ChunkSize)
	return &b
}}

// Pump copies src (an app's pipe or pty master) to dst (its log stream
// writer) and then to b, chunk by chunk, until src ends. Either of dst and
// b may be nil. The log comes first so that what an attached client sees is
// already on disk.
//
// End of file is a clean end, and so is EIO: reading a pty master after the
// last slave descriptor closed fails with EIO rather than returning 0.
// A failing dst does not stop the pump (the app must never block on a full
// pipe): the source is drained to its end, still broadcast, and the first
// dst error is returned then. A closed b is ignored likewise.
func Pump(dst io.Writer, b *Broadcaster, src io.Reader) error {
	var dstErr error
	deliver := func(p []byte) {
		if dst != nil && dstErr == nil {
			if _, err := dst.Write(p); err != nil {
				dstErr = err
			}
		}
		if b != nil {
			b.Write(p)
		}
	}
	var err error
	if sc, ok := src.(syscall.Conn); ok {
		if rc, rerr := sc.SyscallConn(); rerr == nil {
			err = pumpRaw(rc, deliver)
		} else {
			err = pumpPlain(src, deliver)
		}
	} else {
		err = pumpPlain(src, deliver)
	}
	if err != nil {
		return fmt.Errorf("pump: read: %w", err)
	}
	if dstErr != nil {
		return fmt.Errorf("pump: write: %w", dstErr)
	}
	return nil
}

func isEnd(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.EIO)
}

// pumpRaw reads through the runtime poller: the callback runs when the fd
// is readable, so the buffer is taken from the pool only then.
func pumpRaw(rc syscall.RawConn, deliver func([]byte)) error {
	var readErr error
	end := false
	for !end {
		err := rc.Read(func(fd uintptr) bool {
			bp := chunkPool.Get().(*[]byte)
			defer chunkPool.Put(bp)
			for {
				n, err := unix.Read(int(fd), *bp)
				switch {
				case err == unix.EINTR:
					continue
				case err == unix.EAGAIN:
					return false // not readable yet: wait in the poller
				case n > 0:
					deliver((*bp)[:n])
				case err == nil: // n == 0: end of file
					end = true
				case isEnd(err):
					end = true
				default:
					readErr, end = err, true
				}
				return true
			}
		})
		if err != nil {
			return err
		}
	}
	return readErr
}

func pumpPlain(src io.Reader, deliver func([]byte)) error {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	for {
		n, err := src.Read(*bp)
		if n > 0 {
			deliver((*bp)[:n])
		}
		if err != nil {
			if isEnd(err) {
				return nil
			}
			return err
		}
	}
}
