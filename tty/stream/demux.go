package stream

import (
	"fmt"
	"io"

	"github.com/runclet/runclet/internal/errdefs"
)

// Handlers receive the frames Demux reads. A nil writer or func ignores
// its frame type.
type Handlers struct {
	Stdin, Stdout, Stderr io.Writer
	Resize                func(width, height uint16)
	StdinClose            func()
	Exit                  func(code int, errMsg string)
	Detach                func()
}

// demuxBufSize is Demux's initial buffer: the size of the chunks Pump
// sends, so ordinary traffic never grows it.
const demuxBufSize = 32 << 10

// Demux reads frames from r and dispatches them until r ends. It returns
// nil at a clean end of stream (between frames), and otherwise the read
// error, a protocol error (unknown type, bad payload, frame too large: all
// of class invalid argument) or an error from writing to Stdout or Stderr.
//
// A failed write to Stdin is not fatal: it means the process closed its
// stdin or exited, and the session must go on for output, resize and
// detach. Demux then calls StdinClose once (so the server releases the
// pipe) and discards later stdin frames.
func Demux(r io.Reader, h Handlers) error {
	buf := make([]byte, demuxBufSize)
	stdinDone := false
	for {
		t, p, err := ReadFrame(r, buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if cap(p) > cap(buf) {
			buf = p[:cap(p)] // a large frame arrived; keep the larger buffer
		}
		switch t {
		case Stdin:
			if h.Stdin == nil || stdinDone || len(p) == 0 {
				continue
			}
			if _, err := h.Stdin.Write(p); err != nil {
				stdinDone = true
				if h.StdinClose != nil {
					h.StdinClose()
				}
			}
		case Stdout, Stderr:
			w := h.Stdout
			if t == Stderr {
				w = h.Stderr
			}
			if w == nil || len(p) == 0 {
				continue
			}
			if _, err := w.Write(p); err != nil {
				return fmt.Errorf("demux: write %s: %w", t, err)
			}
		case Resize:
			width, height, err := DecodeResize(p)
			if err != nil {
				return fmt.Errorf("demux: %w", err)
			}
			if h.Resize != nil {
				h.Resize(width, height)
			}
		case StdinClose:
			if !stdinDone {
				stdinDone = true
				if h.StdinClose != nil {
					h.StdinClose()
				}
			}
		case Exit:
			st, err := DecodeExit(p)
			if err != nil {
				return fmt.Errorf("demux: %w", err)
			}
			if h.Exit != nil {
				h.Exit(st.ExitCode, st.Error)
			}
		case Detach:
			if h.Detach != nil {
				h.Detach()
			}
		default:
			// Both sides agreed on the protocol version in the handshake;
			// an unknown type means a bug or a corrupt stream.
			return errdefs.InvalidArgument("demux: unknown frame type %d", byte(t))
		}
	}
}
