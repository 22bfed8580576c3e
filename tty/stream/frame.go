// Package stream is the attach/exec wire protocol between stage0 and the
// pod supervisor over a unix socket connection. After the JSON handshake
// (done by the caller) both directions carry frames:
//
//	[1 byte type][4 bytes big-endian payload length][payload]
//
// A frame's payload is at most MaxPayload bytes. docs/logging.md is the
// written contract.
package stream

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/runclet/runclet/internal/errdefs"
)

// FrameType is the first byte of a frame.
type FrameType byte

// The frame types. Their values are part of the stage1 contract.
const (
	// Stdin carries bytes for the process's stdin (client → server).
	Stdin FrameType = 0
	// Stdout and Stderr carry process output (server → client). With a
	// terminal all output is Stdout.
	Stdout FrameType = 1
	Stderr FrameType = 2
	// Resize carries the terminal size: width then height, each a
	// big-endian uint16 (client → server).
	Resize FrameType = 3
	// StdinClose half-closes stdin; empty payload (client → server).
	StdinClose FrameType = 4
	// Exit reports the end of the process, JSON ExitStatus (server →
	// client). It is the last frame the server sends.
	Exit FrameType = 5
	// Detach ends an attach session without touching the process; empty
	// payload (either direction).
	Detach FrameType = 6
)

func (t FrameType) String() string {
	switch t {
	case Stdin:
		return "stdin"
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	case Resize:
		return "resize"
	case StdinClose:
		return "stdin-close"
	case Exit:
		return "exit"
	case Detach:
		return "detach"
	}
	return fmt.Sprintf("frame(%d)", byte(t))
}

// MaxPayload is the largest payload of one frame. It bounds what a reader
// must buffer; writers split larger data (FrameWriter does).
const MaxPayload = 1 << 20

const headerSize = 5

// ErrTooLarge is returned for a frame whose payload exceeds MaxPayload.
var ErrTooLarge = errors.New("stream: frame payload too large")

// WriteFrame writes one frame. It is not synchronised: writers sharing a
// connection hold a common lock (see NewFrameWriter). Header and payload go
// out in one writev(2) when w is a socket.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxPayload {
		return errdefs.InvalidArgument("write %s frame of %d bytes: %w", t, len(payload), ErrTooLarge)
	}
	var hdr [headerSize]byte
	putHeader(&hdr, t, len(payload))
	if len(payload) == 0 {
		_, err := w.Write(hdr[:])
		return wrapWrite(t, err)
	}
	bufs := net.Buffers{hdr[:], payload}
	_, err := bufs.WriteTo(w)
	return wrapWrite(t, err)
}

func putHeader(hdr *[headerSize]byte, t FrameType, n int) {
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], uint32(n))
}

func wrapWrite(t FrameType, err error) error {
	if err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	return nil
}

// ReadFrame reads one frame. The payload is read into buf when it fits, so
// a caller looping over frames passes the same buffer each time; a larger
// payload gets a new buffer, which the caller may keep for the next call
// (payload[:cap(payload)]). The returned payload aliases that buffer. A
// clean end of stream between frames is io.EOF; inside one it is
// io.ErrUnexpectedEOF. A payload over MaxPayload is an error and leaves
// the connection unusable.
func ReadFrame(r io.Reader, buf []byte) (FrameType, []byte, error) {
	var hdr []byte
	if cap(buf) >= headerSize {
		hdr = buf[:headerSize]
	} else {
		hdr = make([]byte, headerSize)
	}
	if _, err := io.ReadFull(r, hdr); err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("read frame header: %w", err)
	}
	t := FrameType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return t, nil, errdefs.InvalidArgument("read %s frame of %d bytes: %w", t, n, ErrTooLarge)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	payload := buf[:n]
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return t, nil, fmt.Errorf("read %s frame payload: %w", t, err)
	}
	return t, payload, nil
}

// EncodeResize returns the payload of a Resize frame.
func EncodeResize(width, height uint16) []byte {
	var p [4]byte
	binary.BigEndian.PutUint16(p[0:], width)
	binary.BigEndian.PutUint16(p[2:], height)
	return p[:]
}

// DecodeResize parses the payload of a Resize frame.
func DecodeResize(p []byte) (width, height uint16, err error) {
	if len(p) != 4 {
		return 0, 0, errdefs.InvalidArgument("resize frame: payload of %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint16(p[0:]), binary.BigEndian.Uint16(p[2:]), nil
}

// ExitStatus is the payload of an Exit frame. Error is set when the process
// could not be run or waited for; ExitCode is then meaningless (-1).
type ExitStatus struct {
	ExitCode int    `json:"exitCode"`
	Error    string `json:"error,omitempty"`
}

// EncodeExit returns the payload of an Exit frame.
func EncodeExit(code int, errMsg string) []byte {
	b, _ := json.Marshal(ExitStatus{ExitCode: code, Error: errMsg}) // cannot fail
	return b
}

// DecodeExit parses the payload of an Exit frame.
func DecodeExit(p []byte) (ExitStatus, error) {
	var st ExitStatus
	if err := json.Unmarshal(p, &st); err != nil {
		return st, errdefs.InvalidArgument("exit frame: %w", err)
	}
	return st, nil
}

// frameWriter is the io.Writer view of one frame type on a shared
// connection.
type frameWriter struct {
	conn io.Writer
	mu   *sync.Mutex
	t    FrameType
	hdr  [headerSize]byte
	vec  [2][]byte
	bufs net.Buffers
}

// NewFrameWriter returns an io.Writer that sends each Write as frames of
// type t on conn (split at MaxPayload). All writers of one connection share
// mu, so frames never interleave; an empty Write sends nothing.
func NewFrameWriter(conn io.Writer, mu *sync.Mutex, t FrameType) io.Writer {
	return &frameWriter{conn: conn, mu: mu, t: t}
}

func (fw *frameWriter) Write(p []byte) (int, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxPayload)]
		putHeader(&fw.hdr, fw.t, len(chunk))
		// The header and the vectors live in the writer, so sending costs
		// no allocation: one writev(2) on a socket.
		fw.vec = [2][]byte{fw.hdr[:], chunk}
		fw.bufs = fw.vec[:]
		if _, err := fw.bufs.WriteTo(fw.conn); err != nil {
			return written, fmt.Errorf("write %s frame: %w", fw.t, err)
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}
