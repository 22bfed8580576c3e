package pod

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/unixsock"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// fakeSupervisor answers as a supervisor of the given Hello would, at the
// pod's socket, and records the requests it got. A supervisor of an older
// build cannot be had here, so this stands for one speaking version 1.
func fakeSupervisor(t *testing.T, l Layout, hello proto.HelloResult) func() []proto.Request {
	t.Helper()
	if err := os.MkdirAll(l.RunDir(hello.PodID), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := unixsock.Listen(l.supervisorSocket(hello.PodID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var got []proto.Request
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			req, _ := proto.ReadRequest(bufio.NewReader(conn))
			mu.Lock()
			got = append(got, req)
			mu.Unlock()
			var resp proto.Response
			switch {
			case req.Version > hello.Version: // as a v1 supervisor did for anything but 1
				resp.Error = &proto.Error{Class: "failed_precondition", Message: "version"}
			case req.Method == proto.MethodHello:
				resp.Result, _ = json.Marshal(hello)
			case req.Method == proto.MethodStats:
				resp.Result, _ = json.Marshal(proto.StatsResult{Apps: []proto.AppStats{{Name: "a"}}})
			default:
				resp.Result = json.RawMessage("{}")
			}
			data, _ := json.Marshal(resp)
			conn.Write(append(data, '\n'))
			conn.Close()
		}
	}()
	return func() []proto.Request {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// stage0 asks a supervisor what it supports before calling a method
// added after version 1: a supervisor of version 1 (an older runclet's,
// still running a pod) is never sent one, and still serves the rest.
func TestCallsDecideByHello(t *testing.T) {
	l := Layout{Root: t.TempDir(), RunRoot: t.TempDir()}
	m := &Manager{l: l}
	ctx := context.Background()

	old := fakeSupervisor(t, l, proto.HelloResult{Version: 1, PodID: "old"})
	if _, err := m.AppStats(ctx, "old", nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("stats of a v1 supervisor: %v", err)
	}
	if err := m.call(ctx, "old", proto.MethodUpdateApp, proto.UpdateAppParams{Name: "a"}, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("update of a v1 supervisor: %v", err)
	}
	if err := m.call(ctx, "old", proto.MethodKillApp, proto.KillAppParams{Name: "a", Signal: 9}, nil); err != nil {
		t.Fatalf("kill through a v1 supervisor: %v", err)
	}
	var methods []string
	for _, r := range old() {
		methods = append(methods, r.Method)
		if r.Version != 1 {
			t.Errorf("a v1 supervisor was sent %s at version %d", r.Method, r.Version)
		}
	}
	if !slices.Equal(methods, []string{proto.MethodHello, proto.MethodKillApp}) {
		t.Fatalf("a v1 supervisor got %v: Hello once (kept), then only what it has", methods)
	}

	cur := fakeSupervisor(t, l, proto.HelloResult{Version: proto.Version, PodID: "new", Features: proto.Features})
	st, err := m.AppStats(ctx, "new", nil)
	if err != nil || len(st) != 1 {
		t.Fatalf("stats of a current supervisor: %v %v", st, err)
	}
	if got := cur(); len(got) != 2 || got[1].Method != proto.MethodStats || got[1].Version != 2 {
		t.Fatalf("requests: %+v", got)
	}
}
