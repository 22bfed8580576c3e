package proto

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/unixsock"
)

func TestErrorClassesSurviveTheWire(t *testing.T) {
	for _, class := range []error{errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrInvalidArgument, errdefs.ErrFailedPrecondition, errdefs.ErrUnavailable, errdefs.ErrDeadlineExceeded} {
		sent := ErrorFrom(wrapClass(class))
		got := sent.Err()
		if !errors.Is(got, class) {
			t.Errorf("%v: class lost across the wire: %#v", class, sent)
		}
	}
	if e := ErrorFrom(errors.New("boom")); e.Class != "internal" || e.Err().Error() != "boom" {
		t.Fatalf("unclassed error: %#v", e)
	}
}

func wrapClass(class error) error {
	return &classErr{class}
}

type classErr struct{ c error }

func (c *classErr) Error() string { return "x: " + c.c.Error() }
func (c *classErr) Unwrap() error { return c.c }

// A run root deeper than sun_path allows still gets a working socket.
func TestCallOverALongSocketPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < 150 {
		dir = filepath.Join(dir, strings.Repeat("d", 40))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "supervisor.sock")
	ln, err := unixsock.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadBytes('\n')
		var req Request
		json.Unmarshal(line, &req)
		res, _ := json.Marshal(HelloResult{Version: req.Version, PodID: req.Method})
		data, _ := json.Marshal(Response{Result: res})
		conn.Write(append(data, '\n'))
	}()
	var h HelloResult
	if err := Call(context.Background(), sock, MethodHello, nil, &h); err != nil {
		t.Fatal(err)
	}
	if h.Version != MinVersion || h.PodID != MethodHello { // Hello is sent at the version every supervisor reads
		t.Fatalf("answer %+v", h)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("socket not at its real path: %v", err)
	}
}

func TestCallToNobodyIsUnavailable(t *testing.T) {
	err := Call(context.Background(), filepath.Join(t.TempDir(), "none.sock"), MethodHello, nil, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("want Unavailable, got %v", err)
	}
}
