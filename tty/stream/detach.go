package stream

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/runclet/runclet/internal/errdefs"
)

// DefaultDetachKeys is the detach sequence when none is configured, as in
// Docker and rkt's attach.
const DefaultDetachKeys = "ctrl-p,ctrl-q"

// ErrDetached is returned by a DetachReader once the user typed the detach
// sequence.
var ErrDetached = errors.New("stream: detached")

// ParseDetachKeys parses a Docker-style detach key spec: comma-separated
// keys, each a single character or "ctrl-" followed by a letter or one of
// @ [ \ ] ^ _ (the ASCII control codes 0-31). An empty spec yields no keys,
// which disables detaching.
func ParseDetachKeys(spec string) ([]byte, error) {
	if spec == "" {
		return nil, nil
	}
	var keys []byte
	for _, key := range strings.Split(spec, ",") {
		switch {
		case len(key) == 1:
			keys = append(keys, key[0])
		case len(key) == 6 && strings.EqualFold(key[:5], "ctrl-"):
			c, ok := ctrlCode(key[5])
			if !ok {
				return nil, errdefs.InvalidArgument("detach keys %q: no control code for %q", spec, key)
			}
			keys = append(keys, c)
		default:
			return nil, errdefs.InvalidArgument("detach keys %q: %q is not a character or ctrl-<key>", spec, key)
		}
	}
	return keys, nil
}

func ctrlCode(c byte) (byte, bool) {
	switch {
	case c >= 'a' && c <= 'z':
		return c - 'a' + 1, true
	case c >= 'A' && c <= 'Z':
		return c - 'A' + 1, true
	}
	switch c {
	case '@':
		return 0, true
	case '[':
		return 27, true
	case '\\':
		return 28, true
	case ']':
		return 29, true
	case '^':
		return 30, true
	case '_':
		return 31, true
	}
	return 0, false
}

// DetachReader passes a terminal's input through until the detach sequence
// appears, then returns ErrDetached; the sequence itself is not passed on.
// Bytes that might start the sequence are held back until it is either
// complete or broken, in which case they are released in order, so an
// editor's ctrl-p still reaches the app (just one key later).
type DetachReader struct {
	r        io.Reader
	keys     []byte
	held     []byte // a proper prefix of keys
	out      []byte // released bytes; out[pos:] not yet returned
	pos      int
	in       []byte
	err      error // from r, returned once out is empty
	detached bool
}

// NewDetachReader wraps r. With no keys everything passes through.
func NewDetachReader(r io.Reader, keys []byte) *DetachReader {
	return &DetachReader{r: r, keys: keys, held: make([]byte, 0, len(keys))}
}

func (d *DetachReader) Read(p []byte) (int, error) {
	if len(d.keys) == 0 || len(p) == 0 {
		return d.r.Read(p)
	}
	for d.pos == len(d.out) {
		d.out, d.pos = d.out[:0], 0
		if d.detached {
			return 0, ErrDetached
		}
		if d.err != nil {
			return 0, d.err
		}
		if cap(d.in) < len(p) {
			d.in = make([]byte, max(len(p), 512))
		}
		n, err := d.r.Read(d.in[:len(p)])
		if n == 0 && err == nil {
			return 0, nil // pass on the source's empty read rather than spin
		}
		d.scan(d.in[:n])
		if err != nil && !d.detached {
			// The input ended: a partial sequence can no longer complete.
			d.out = append(d.out, d.held...)
			d.held = d.held[:0]
			d.err = err
		}
	}
	n := copy(p, d.out[d.pos:])
	d.pos += n
	return n, nil
}

// scan moves input to out, holding back a possible start of the sequence.
// Input after a complete sequence is discarded: the session is over.
func (d *DetachReader) scan(in []byte) {
	for _, c := range in {
		d.held = append(d.held, c)
		// Release from the front until what is held could still become
		// the sequence (a naive search, fine for a few-byte sequence).
		for len(d.held) > 0 && !bytes.HasPrefix(d.keys, d.held) {
			d.out = append(d.out, d.held[0])
			d.held = append(d.held[:0], d.held[1:]...)
		}
		if len(d.held) == len(d.keys) {
			d.detached = true
			d.held = d.held[:0]
			return
		}
	}
}
