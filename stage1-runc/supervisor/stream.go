package supervisor

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/state"
	"github.com/runclet/runclet/stage1-runc/container"
	"github.com/runclet/runclet/stage1-runc/proto"
	"github.com/runclet/runclet/tty/stream"
)

// eot is what closing stdin means on a terminal: ^D at the start of a line.
var eot = []byte{4}

func setWinsize(f *os.File, w, h uint16) {
	if f == nil || w == 0 || h == 0 {
		return
	}
	unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: w, Row: h})
}

// closeStdin ends the app's stdin: the pipe is closed; on a terminal EOT
// is sent (closing the master would hang up the app).
func (a *app) closeStdin() {
	if a.stdin == nil {
		return
	}
	if a.console != nil {
		a.console.Write(eot)
		return
	}
	a.stdin.Close()
}

// attach serves one Attach call: output frames from the app's
// broadcasters, input frames to its stdin and terminal, an Exit frame
// when the app exits. The client's leaving (or Detach) ends only the
// attach; a StdinOnce app's stdin is closed when its first stdin attach
// ends, as the CRI defines, unless it ended by detaching.
func (s *supervisor) attach(conn net.Conn, r *bufio.Reader, req proto.Request) {
	p, err := decode[proto.AttachParams](req)
	if err != nil {
		reply(conn, nil, err)
		return
	}
	s.mu.Lock()
	a := s.apps[p.Name]
	s.mu.Unlock()
	if a == nil {
		reply(conn, nil, errdefs.NotFound("app %q not found in pod %s", p.Name, s.opts.PodID))
		return
	}
	select {
	case <-a.exited:
		reply(conn, nil, errdefs.FailedPrecondition("app %s has exited", a.name))
		return
	default:
	}
	if p.Stdin && a.stdin == nil {
		reply(conn, nil, errdefs.FailedPrecondition("app %s was created without stdin", a.name))
		return
	}
	var subs []io.ReadCloser
	var mu sync.Mutex
	var copies sync.WaitGroup
	for i, want := range []bool{p.Stdout, p.Stderr && !a.params.Terminal} {
		if !want {
			continue
		}
		sub := a.broadcasts[i].Subscribe()
		subs = append(subs, sub)
		w := stream.NewFrameWriter(conn, &mu, stream.Stdout+stream.FrameType(i))
		copies.Add(1)
		go func() {
			defer copies.Done()
			io.Copy(w, sub)
		}()
	}
	reply(conn, proto.AttachResult{Tty: a.params.Terminal}, nil)

	clientDone := make(chan struct{})
	var detached atomic.Bool
	go func() {
		defer close(clientDone)
		h := stream.Handlers{
			Resize: func(w, h uint16) { setWinsize(a.console, w, h) },
			Detach: func() { detached.Store(true); conn.Close() },
		}
		if p.Stdin {
			h.Stdin = a.stdin
			h.StdinClose = a.closeStdin
		}
		stream.Demux(r, h)
	}()
	select {
	case <-a.exited:
		copies.Wait() // broadcasters are closed after exit: the rest of the output comes first
		a.mu.Lock()
		code := a.exit.ExitCode
		a.mu.Unlock()
		mu.Lock()
		stream.WriteFrame(conn, stream.Exit, stream.EncodeExit(code, ""))
		mu.Unlock()
	case <-clientDone:
	}
	for _, sub := range subs {
		sub.Close()
	}
	conn.Close()
	// A detach is the user leaving the app running on purpose: like
	// Docker, it does not count as the end of stdin.
	if p.Stdin && a.params.StdinOnce && !detached.Load() {
		a.stdinOnce.Do(a.closeStdin)
	}
}

// exec serves one Exec call: a process in the app's container whose
// stdio are this connection's frames. The process is killed (with its
// process group) on timeout and when the client goes away.
func (s *supervisor) exec(conn net.Conn, r *bufio.Reader, req proto.Request) {
	defer conn.Close()
	p, err := decode[proto.ExecParams](req)
	if err != nil {
		reply(conn, nil, err)
		return
	}
	s.mu.Lock()
	a := s.apps[p.Name]
	s.mu.Unlock()
	if a == nil {
		reply(conn, nil, errdefs.NotFound("app %q not found in pod %s", p.Name, s.opts.PodID))
		return
	}
	if st := a.snapshot().Status; st != state.AppRunning {
		reply(conn, nil, errdefs.FailedPrecondition("app %s is %s, not running", a.name, st))
		return
	}
	eio, err := newExecIO(p.Tty, p.Stdin)
	if err != nil {
		reply(conn, nil, err)
		return
	}
	defer eio.close()
	proc, err := a.c.Exec(container.ExecSpec{Args: p.Args, Env: p.Env, Cwd: p.Cwd, Tty: p.Tty, Width: p.Width, Height: p.Height}, eio.stdio)
	eio.closeChildEnds()
	if err != nil {
		reply(conn, nil, err)
		return
	}
	defer proc.Close() // after which a late Kill (client gone) does nothing
	if err := eio.recvConsole(); err != nil {
		proc.Kill()
		proc.Wait()
		reply(conn, nil, err)
		return
	}
	reply(conn, proto.ExecResult{Pid: proc.Pid()}, nil)

	var mu sync.Mutex
	var copies sync.WaitGroup
	for i, src := range eio.outputs {
		w := stream.NewFrameWriter(conn, &mu, stream.Stdout+stream.FrameType(i))
		copies.Add(1)
		go func() {
			defer copies.Done()
			copyOutput(w, src)
		}()
	}
	go func() {
		h := stream.Handlers{Resize: func(w, h uint16) { setWinsize(eio.console, w, h) }}
		if eio.stdin != nil {
			h.Stdin = eio.stdin
			h.StdinClose = eio.closeStdin
		}
		stream.Demux(r, h)
		proc.Kill() // the client is gone: nobody waits for this process
	}()
	var timedOut atomic.Bool
	if p.Timeout > 0 {
		t := time.AfterFunc(p.Timeout, func() { timedOut.Store(true); proc.Kill() })
		defer t.Stop()
	}
	code, _, msg := container.ExitCode(proc.Wait())
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(pumpGrace):
		eio.closeOutputs() // a background child holds the output: stop reading
		<-done
	}
	if timedOut.Load() {
		msg = "timeout"
	}
	mu.Lock()
	stream.WriteFrame(conn, stream.Exit, stream.EncodeExit(code, msg))
	mu.Unlock()
	slog.Debug("exec exited", "app", a.name, "args", p.Args, "code", code, "msg", msg)
}

func copyOutput(w io.Writer, src *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// execIO is an exec's stdio from the supervisor's side.
type execIO struct {
	stdio         container.Stdio
	childEnds     []*os.File
	outputs       []*os.File
	stdin         io.Writer
	stdinCloser   func()
	console       *os.File
	consoleParent *os.File
}

func newExecIO(tty, stdin bool) (*execIO, error) {
	e := &execIO{}
	if tty {
		parent, child, err := container.NewConsoleSocket()
		if err != nil {
			return nil, err
		}
		e.consoleParent, e.stdio.ConsoleSocket = parent, child
		e.childEnds = append(e.childEnds, child)
		return e, nil
	}
	var err error
	pipe := func() (r, w *os.File) {
		if err == nil {
			r, w, err = os.Pipe()
		}
		return r, w
	}
	outR, outW := pipe()
	errR, errW := pipe()
	var inR, inW *os.File
	if stdin {
		inR, inW = pipe()
	}
	if err != nil {
		for _, f := range []*os.File{outR, outW, errR, errW, inR, inW} {
			if f != nil {
				f.Close()
			}
		}
		return nil, err
	}
	e.stdio.Stdout, e.stdio.Stderr = outW, errW
	e.outputs = []*os.File{outR, errR}
	e.childEnds = append(e.childEnds, outW, errW)
	if stdin {
		e.stdio.Stdin = inR
		e.childEnds = append(e.childEnds, inR)
		e.stdin, e.stdinCloser = inW, func() { inW.Close() }
	}
	return e, nil
}

func (e *execIO) recvConsole() error {
	if e.consoleParent == nil {
		return nil
	}
	master, err := container.RecvConsole(e.consoleParent)
	if err != nil {
		return errors.New("exec: receiving its terminal: " + err.Error())
	}
	e.console = master
	e.outputs = []*os.File{master}
	e.stdin = master
	e.stdinCloser = func() { master.Write(eot) }
	return nil
}

func (e *execIO) closeStdin() {
	if e.stdinCloser != nil {
		e.stdinCloser()
	}
}

func (e *execIO) closeChildEnds() {
	for _, f := range e.childEnds {
		f.Close()
	}
	e.childEnds = nil
}

func (e *execIO) closeOutputs() {
	for _, f := range e.outputs {
		f.Close()
	}
}

func (e *execIO) close() {
	e.closeChildEnds()
	e.closeOutputs()
	if e.consoleParent != nil {
		e.consoleParent.Close()
	}
	if c, ok := e.stdin.(io.Closer); ok && e.console == nil {
		c.Close()
	}
}
