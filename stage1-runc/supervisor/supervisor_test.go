package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// newTestSupervisor is a supervisor with no apps that is not serving.
func newTestSupervisor() *supervisor {
	return &supervisor{opts: proto.SuperviseArgs{PodID: "pod1", Flavor: "runc"}, apps: map[string]*app{}, shutdown: make(chan struct{})}
}

// roundTrip sends one raw request line to handle and returns the response.
func roundTrip(t *testing.T, s *supervisor, line string) proto.Response {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	go s.handle(server)
	client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	b, err := bufio.NewReader(client).ReadBytes('\n')
	if err != nil {
		t.Fatalf("%s: no answer: %v", line, err)
	}
	var resp proto.Response
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatalf("%s: answer %q: %v", line, b, err)
	}
	return resp
}

func request(t *testing.T, method string, params any) string {
	t.Helper()
	req := proto.Request{Version: proto.RequestVersion(method), Method: method}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			t.Fatal(err)
		}
		req.Params = b
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandleAnswersHelloStateAndStats(t *testing.T) {
	s := newTestSupervisor()
	resp := roundTrip(t, s, request(t, proto.MethodHello, nil))
	var h proto.HelloResult
	if resp.Error != nil || json.Unmarshal(resp.Result, &h) != nil {
		t.Fatalf("hello: %+v", resp)
	}
	if h.PodID != "pod1" || h.Flavor != "runc" || h.Version != proto.Version || h.Pid != os.Getpid() ||
		!h.Supports(proto.FeatureStats) || !h.Supports(proto.FeatureUpdateApp) {
		t.Fatalf("hello: %+v", h)
	}
	// Hello answers whatever version a peer speaks: it is how the peer
	// learns which to speak.
	for _, v := range []int{0, proto.MinVersion, proto.Version + 1} {
		resp := roundTrip(t, s, fmt.Sprintf(`{"version":%d,"method":"Hello"}`, v))
		if resp.Error != nil || json.Unmarshal(resp.Result, &h) != nil || h.Version != proto.Version {
			t.Fatalf("hello at version %d: %+v", v, resp)
		}
	}
	// Every version from MinVersion up is served: an older stage0 sends 1.
	for v := proto.MinVersion; v <= proto.Version; v++ {
		if resp := roundTrip(t, s, fmt.Sprintf(`{"version":%d,"method":"State"}`, v)); resp.Error != nil {
			t.Fatalf("state at version %d: %+v", v, resp)
		}
	}
	var st proto.StateResult
	if resp := roundTrip(t, s, request(t, proto.MethodState, nil)); resp.Error != nil || json.Unmarshal(resp.Result, &st) != nil || st.Apps == nil || len(st.Apps) != 0 {
		t.Fatalf("state: %+v %+v", resp, st)
	}
	// Stats takes no parameters, some, or names apps it does not have.
	for _, params := range []any{nil, proto.StatsParams{}, proto.StatsParams{Names: []string{"nope"}}} {
		var sr proto.StatsResult
		if resp := roundTrip(t, s, request(t, proto.MethodStats, params)); resp.Error != nil || json.Unmarshal(resp.Result, &sr) != nil || sr.Apps == nil || len(sr.Apps) != 0 {
			t.Fatalf("stats %v: %+v %+v", params, resp, sr)
		}
	}
}

// Every request the supervisor cannot act on gets an error of the right
// class, never a hang or a crash.
func TestHandleRefusesBadRequests(t *testing.T) {
	s := newTestSupervisor()
	s.apps["creating"] = nil // a name being created: reserved, not there yet
	name := func(n string) proto.NameParams { return proto.NameParams{Name: n} }
	for _, c := range []struct {
		what, line string
		class      error
	}{
		{"not JSON", "{nope", errdefs.ErrInvalidArgument},
		{"old version", `{"version":0,"method":"State"}`, errdefs.ErrFailedPrecondition},
		{"newer version", fmt.Sprintf(`{"version":%d,"method":"State"}`, proto.Version+1), errdefs.ErrFailedPrecondition},
		{"unknown method", request(t, "Frobnicate", nil), errdefs.ErrInvalidArgument},
		{"missing params", request(t, proto.MethodStartApp, nil), errdefs.ErrInvalidArgument},
		{"params of the wrong type", `{"version":1,"method":"StopApp","params":{"name":7}}`, errdefs.ErrInvalidArgument},
		{"stats of the wrong type", `{"version":1,"method":"Stats","params":{"names":"x"}}`, errdefs.ErrInvalidArgument},
		{"add without bundle", request(t, proto.MethodAddApp, proto.AddAppParams{Name: "a", ContainerID: "a", ExitFile: "/x"}), errdefs.ErrInvalidArgument},
		{"add without name", request(t, proto.MethodAddApp, proto.AddAppParams{ContainerID: "a", Bundle: "/b", ExitFile: "/x"}), errdefs.ErrInvalidArgument},
		{"add of a name being created", request(t, proto.MethodAddApp, proto.AddAppParams{Name: "creating", ContainerID: "c", Bundle: "/b", ExitFile: "/x"}), errdefs.ErrAlreadyExists},
		{"start absent", request(t, proto.MethodStartApp, name("nope")), errdefs.ErrNotFound},
		{"start being created", request(t, proto.MethodStartApp, name("creating")), errdefs.ErrNotFound},
		{"stop absent", request(t, proto.MethodStopApp, proto.StopAppParams{Name: "nope", Signal: 15}), errdefs.ErrNotFound},
		{"kill absent", request(t, proto.MethodKillApp, proto.KillAppParams{Name: "nope", Signal: 9}), errdefs.ErrNotFound},
		{"remove absent", request(t, proto.MethodRemove, name("nope")), errdefs.ErrNotFound},
		{"remove being created", request(t, proto.MethodRemove, name("creating")), errdefs.ErrNotFound},
		{"reopen log absent", request(t, proto.MethodReopenLog, name("nope")), errdefs.ErrNotFound},
		{"update absent", request(t, proto.MethodUpdateApp, proto.UpdateAppParams{Name: "nope"}), errdefs.ErrNotFound},
	} {
		resp := roundTrip(t, s, c.line)
		if resp.Error == nil {
			t.Errorf("%s: no error (%s)", c.what, resp.Result)
			continue
		}
		if err := resp.Error.Err(); !errors.Is(err, c.class) {
			t.Errorf("%s: %v (%s), want %v", c.what, err, resp.Error.Class, c.class)
		}
	}
	if _, ok := s.apps["creating"]; !ok || len(s.apps) != 1 {
		t.Fatalf("failed requests changed the apps: %v", s.apps)
	}
}

// A pod whose pid namespace holder died takes no new app.
func TestAddAppRefusedOnceTheHolderIsGone(t *testing.T) {
	s := newTestSupervisor()
	s.pidnsGone = make(chan struct{})
	if s.holderGone() {
		t.Fatal("holder gone while it runs")
	}
	close(s.pidnsGone)
	resp := roundTrip(t, s, request(t, proto.MethodAddApp, proto.AddAppParams{Name: "a", ContainerID: "a", Bundle: "/b", ExitFile: "/x"}))
	if resp.Error == nil || !errors.Is(resp.Error.Err(), errdefs.ErrFailedPrecondition) || len(s.apps) != 0 {
		t.Fatalf("AddApp with the holder gone: %+v, apps %v", resp.Error, s.apps)
	}
}

func TestShutdownStopsServingOnce(t *testing.T) {
	s := newTestSupervisor()
	for i := 0; i < 2; i++ {
		if resp := roundTrip(t, s, request(t, proto.MethodShutdown, nil)); resp.Error != nil {
			t.Fatalf("shutdown %d: %+v", i, resp.Error)
		}
	}
	select {
	case <-s.shutdown:
	case <-time.After(5 * time.Second): // it stops after it answered
		t.Fatal("shutdown did not stop serving")
	}
}

func TestReadyWritesOkOrTheError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{{nil, "ok\n"}, {errors.New("listen: boom"), "listen: boom\n"}} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		s := &supervisor{opts: proto.SuperviseArgs{ReadyFD: readyFD(t, w)}}
		s.ready(c.err) // closes w's descriptor
		b := make([]byte, 64)
		n, _ := r.Read(b)
		if string(b[:n]) != c.want {
			t.Errorf("ready(%v) wrote %q, want %q", c.err, b[:n], c.want)
		}
		r.Close()
	}
	(&supervisor{}).ready(nil) // no ready fd: nothing to do, no panic
}

// Run serves on the pod's socket, reports ready and, on Shutdown, removes
// its socket and pid file and returns.
func TestRunServesUntilShutdown(t *testing.T) {
	testutil.RequiresRoot(t, "the supervisor runs as root")
	runDir := filepath.Join(t.TempDir(), "pod")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		done <- Run(proto.SuperviseArgs{PodID: "pod1", Flavor: "fly", RunDir: runDir, StateRoot: t.TempDir(), ReadyFD: readyFD(t, w)})
	}()
	ready, _ := bufio.NewReader(r).ReadString('\n')
	if ready != "ok\n" {
		t.Fatalf("ready: %q", ready)
	}
	pid, err := os.ReadFile(proto.PidPath(runDir))
	if err != nil || strings.TrimSpace(string(pid)) == "" {
		t.Fatalf("pid file: %q %v", pid, err)
	}
	ctx := context.Background()
	var h proto.HelloResult
	if err := proto.Call(ctx, proto.SocketPath(runDir), proto.MethodHello, nil, &h); err != nil || h.PodID != "pod1" || h.Flavor != "fly" {
		t.Fatalf("hello: %+v %v", h, err)
	}
	if err := proto.Call(ctx, proto.SocketPath(runDir), proto.MethodStartApp, proto.NameParams{Name: "x"}, nil); !errdefs.IsNotFound(err) {
		t.Fatalf("start of an absent app: %v", err)
	}
	if err := proto.Call(ctx, proto.SocketPath(runDir), proto.MethodShutdown, nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Shutdown")
	}
	for _, p := range []string{proto.SocketPath(runDir), proto.PidPath(runDir)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after shutdown: %v", p, err)
		}
	}
}

// Run reports a failure to listen on its ready fd and returns it.
func TestRunReportsListenFailure(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = Run(proto.SuperviseArgs{PodID: "pod1", RunDir: filepath.Join(file, "pod"), ReadyFD: readyFD(t, w)})
	if err == nil {
		t.Fatal("Run under a regular file succeeded")
	}
	msg, _ := bufio.NewReader(r).ReadString('\n')
	if msg == "ok\n" || !strings.Contains(msg, "not a directory") {
		t.Fatalf("ready fd got %q for %v", msg, err)
	}
}

// readyFD hands the supervisor a descriptor of its own for w's pipe and
// closes w: ready closes what it is given, and w's finalizer must not
// close that number again once it belongs to something else.
func readyFD(t *testing.T, w *os.File) int {
	t.Helper()
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return fd
}
