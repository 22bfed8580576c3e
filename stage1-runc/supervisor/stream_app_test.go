package supervisor

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/stage1-runc/proto"
	"github.com/runclet/runclet/tty/stream"
)

// session is one Attach or Exec call: frames out, and what came back.
type session struct {
	t        *testing.T
	send     func(stream.FrameType, []byte)
	mu       sync.Mutex
	out, err bytes.Buffer
	exit     chan stream.ExitStatus
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// open makes a streaming call; its error is the supervisor's answer.
func (r *podRig) open(method string, params, result any) (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	conn, rd, err := proto.Dial(ctx, proto.SocketPath(r.runDir), method, params)
	if err != nil {
		cancel()
		return nil, err
	}
	r.t.Cleanup(func() { conn.Close(); cancel() })
	if err := proto.ReadResponse(rd, result); err != nil {
		return nil, err
	}
	s := &session{t: r.t, exit: make(chan stream.ExitStatus, 1)}
	var wmu sync.Mutex
	s.send = func(t stream.FrameType, p []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		if err := stream.WriteFrame(conn, t, p); err != nil {
			r.t.Errorf("send %v: %v", t, err)
		}
	}
	go stream.Demux(rd, stream.Handlers{
		Stdout: lockedWriter{&s.mu, &s.out}, Stderr: lockedWriter{&s.mu, &s.err},
		Exit: func(code int, msg string) { s.exit <- stream.ExitStatus{ExitCode: code, Error: msg} },
	})
	return s, nil
}

// waitOut waits until stdout holds want.
func (s *session) waitOut(want string) {
	s.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s.mu.Lock()
		got := s.out.String()
		s.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("stdout %q, want %q in it", got, want)
		}
	}
}

func (s *session) waitExit() stream.ExitStatus {
	s.t.Helper()
	select {
	case e := <-s.exit:
		return e
	case <-time.After(20 * time.Second):
		s.t.Fatal("no exit frame")
		return stream.ExitStatus{}
	}
}

// Attach and exec through a real supervisor: an attach carries stdin to
// the app and its output back, ends with its exit, and its end closes a
// StdinOnce app's stdin; exec runs in a running app with its own stdio
// and exit code, and a timeout kills it; the state machine refuses a
// second start and streams to an app that is not running.
func TestAttachAndExecBookkeeping(t *testing.T) {
	r := newPodRig(t)
	r.addAppWith("talk", func(p *proto.AddAppParams) { p.Stdin, p.StdinOnce = true, true },
		"sh", "-c", `while read l; do echo "got $l"; done; echo bye; exit 7`)
	var st proto.AppState
	if err := r.call(proto.MethodStartApp, proto.NameParams{Name: "talk"}, &st); err != nil {
		t.Fatal(err)
	}
	if err := r.call(proto.MethodStartApp, proto.NameParams{Name: "talk"}, &st); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "running; it cannot become running") {
		t.Fatalf("second start: %v", err)
	}
	var ar proto.AttachResult
	a, err := r.open(proto.MethodAttach, proto.AttachParams{Name: "talk", Stdin: true, Stdout: true, Stderr: true}, &ar)
	if err != nil || ar.Tty {
		t.Fatalf("attach: %+v %v", ar, err)
	}
	a.send(stream.Stdin, []byte("hi\n"))
	a.waitOut("got hi\n")
	a.send(stream.StdinClose, nil) // read ends: the app says bye and exits 7
	if e := a.waitExit(); e.ExitCode != 7 {
		t.Fatalf("attach exit: %+v", e)
	}
	a.waitOut("bye\n")
	if _, err := r.open(proto.MethodAttach, proto.AttachParams{Name: "talk", Stdout: true}, &ar); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("attach to an exited app: %v", err)
	}
	if _, err := r.open(proto.MethodExec, proto.ExecParams{Name: "talk", Args: []string{"true"}}, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec in an exited app: %v", err)
	}

	r.addApp("srv", "sleep", "600")
	if _, err := r.open(proto.MethodExec, proto.ExecParams{Name: "srv", Args: []string{"true"}}, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec in a created app: %v", err)
	}
	if err := r.call(proto.MethodStartApp, proto.NameParams{Name: "srv"}, &st); err != nil {
		t.Fatal(err)
	}
	var er proto.ExecResult
	e, err := r.open(proto.MethodExec, proto.ExecParams{Name: "srv", Args: []string{"sh", "-c", "echo out; echo err >&2; exit 5"}}, &er)
	if err != nil || er.Pid <= 0 {
		t.Fatalf("exec: %+v %v", er, err)
	}
	if x := e.waitExit(); x.ExitCode != 5 || x.Error != "" {
		t.Fatalf("exec exit: %+v", x)
	}
	e.mu.Lock()
	if e.out.String() != "out\n" || e.err.String() != "err\n" {
		t.Errorf("exec output: %q %q", e.out.String(), e.err.String())
	}
	e.mu.Unlock()
	start := time.Now()
	e, err = r.open(proto.MethodExec, proto.ExecParams{Name: "srv", Args: []string{"sleep", "100"}, Timeout: 300 * time.Millisecond}, &er)
	if err != nil {
		t.Fatal(err)
	}
	if x := e.waitExit(); x.ExitCode != 137 || x.Error != "timeout" || time.Since(start) > 10*time.Second {
		t.Fatalf("exec past its timeout: %+v after %v", x, time.Since(start))
	}
	// The app itself runs on.
	var all proto.StateResult
	if err := r.call(proto.MethodState, nil, &all); err != nil {
		t.Fatal(err)
	}
	for _, s := range all.Apps {
		if s.Name == "srv" && s.Status != "running" {
			t.Fatalf("srv after its execs: %+v", s)
		}
	}
}
