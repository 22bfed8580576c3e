package image

import (
	"bytes"
	"io"

	"github.com/opencontainers/go-digest"
)

// ProgressEvent reports one layer's state during a pull or import.
type ProgressEvent struct {
	// ID is the short layer digest, as `docker pull` prints it.
	ID string
	// Action is "waiting", "downloading", "extracting", "done" or "already exists".
	Action  string
	Current int64
	Total   int64
}

// ProgressFunc receives progress events, possibly from several goroutines
// at once.
type ProgressFunc func(ProgressEvent)

// progressTracker is nil-safe so the store never checks whether anyone listens.
type progressTracker struct{ fn ProgressFunc }

func shortID(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

func (p *progressTracker) send(ev ProgressEvent) {
	if p != nil && p.fn != nil {
		p.fn(ev)
	}
}

func (p *progressTracker) waiting(d digest.Digest, size int64) {
	p.send(ProgressEvent{ID: shortID(d), Action: "waiting", Total: size})
}

func (p *progressTracker) done(d digest.Digest, action string) {
	p.send(ProgressEvent{ID: shortID(d), Action: action})
}

// reader reports bytes as they pass, at most every 256 KiB.
func (p *progressTracker) reader(d digest.Digest, size int64, r io.Reader, local bool) io.Reader {
	if p == nil || p.fn == nil {
		return r
	}
	action := "downloading"
	if local {
		action = "extracting"
	}
	return &progressReader{r: r, p: p, ev: ProgressEvent{ID: shortID(d), Action: action, Total: size}}
}

type progressReader struct {
	r    io.Reader
	p    *progressTracker
	ev   ProgressEvent
	last int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.ev.Current += int64(n)
	if pr.ev.Current-pr.last >= 256<<10 || err == io.EOF {
		pr.last = pr.ev.Current
		pr.p.send(pr.ev)
	}
	return n, err
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
