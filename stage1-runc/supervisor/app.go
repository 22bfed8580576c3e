package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/internal/state"
	"github.com/runclet/runclet/stage1-runc/container"
	"github.com/runclet/runclet/stage1-runc/proto"
	"github.com/runclet/runclet/tty/crilog"
	"github.com/runclet/runclet/tty/fanout"
)

// pumpGrace is how long output may keep flowing after an app's init
// exits: a background child holding stdout must not keep the exit from
// being recorded.
const pumpGrace = 2 * time.Second

type app struct {
	name   string
	params proto.AddAppParams
	c      *container.App
	log    *crilog.Writer // nil when the app has no log path

	mu        sync.Mutex
	status    state.App
	createdAt time.Time
	startedAt time.Time
	exit      *proto.ExitStatus
	exited    chan struct{}
	removed   bool

	stdin      io.WriteCloser // stdin pipe or pty master; nil without stdin
	stdinOnce  sync.Once      // closes stdin for StdinOnce apps
	console    *os.File       // pty master, for resize; nil without a terminal
	outputs    []*os.File     // read ends / pty master, closed after exit
	pumps      sync.WaitGroup
	broadcasts [2]*fanout.Broadcaster // stdout, stderr: what attach clients see
}

func newApp(copt container.Options, p proto.AddAppParams, maxLine int) (_ *app, retErr error) {
	a := &app{name: p.Name, params: p, status: state.AppCreated, createdAt: time.Now().UTC(), exited: make(chan struct{}),
		broadcasts: [2]*fanout.Broadcaster{fanout.NewBroadcaster(fanout.DefaultBufSize), fanout.NewBroadcaster(fanout.DefaultBufSize)}}
	var err error
	if p.LogPath != "" {
		if a.log, err = crilog.NewWriter(p.LogPath, maxLine); err != nil {
			return nil, fmt.Errorf("app %s: log: %w", p.Name, err)
		}
	}
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
		if retErr != nil {
			a.closeIO()
		}
	}()
	var stdio container.Stdio
	var consoleParent *os.File
	if p.Terminal {
		parent, child, err := container.NewConsoleSocket()
		if err != nil {
			return nil, err
		}
		consoleParent, stdio.ConsoleSocket = parent, child
		childEnds = append(childEnds, parent, child)
	} else {
		outR, outW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			outR.Close()
			outW.Close()
			return nil, err
		}
		a.outputs = append(a.outputs, outR, errR)
		childEnds = append(childEnds, outW, errW)
		stdio.Stdout, stdio.Stderr = outW, errW
		if p.Stdin {
			inR, inW, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			a.stdin = inW
			childEnds = append(childEnds, inR)
			stdio.Stdin = inR
		}
	}
	if a.c, err = container.Create(copt, p.ContainerID, p.Bundle, stdio); err != nil {
		return nil, err
	}
	if p.Terminal {
		master, err := container.RecvConsole(consoleParent)
		if err != nil {
			a.c.Signal(syscall.SIGKILL, true)
			a.c.Wait()
			a.c.Destroy()
			return nil, fmt.Errorf("app %s: receiving its terminal: %w", p.Name, err)
		}
		a.outputs = append(a.outputs, master)
		a.console = master
		if p.Stdin {
			a.stdin = master
		}
		a.pump(master, crilog.Stdout, 0)
	} else {
		a.pump(a.outputs[0], crilog.Stdout, 0)
		a.pump(a.outputs[1], crilog.Stderr, 1)
	}
	go a.waitExit()
	return a, nil
}

// pump copies one output stream to the app's log and to its attach
// clients until EOF (or EIO, which a pty master reports once the last
// slave fd closes).
func (a *app) pump(src *os.File, stream crilog.Stream, idx int) {
	var dst io.Writer = io.Discard
	if a.log != nil {
		dst = a.log.StreamWriter(stream)
	}
	a.pumps.Add(1)
	go func() {
		defer a.pumps.Done()
		if err := fanout.Pump(dst, a.broadcasts[idx], src); err != nil {
			slog.Warn("app output", "app", a.name, "stream", stream, "err", err)
		}
	}()
}

func (a *app) waitExit() {
	st, err := a.c.Wait()
	exitedAt := time.Now().UTC()
	a.mu.Lock()
	es := &proto.ExitStatus{ExitedAt: exitedAt, StartedAt: a.startedAt}
	a.mu.Unlock()
	switch {
	case err != nil && st == nil:
		es.ExitCode, es.Message = 255, err.Error()
	default:
		ws := st.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			es.Signal = int(ws.Signal())
			es.ExitCode = 128 + es.Signal
		} else {
			es.ExitCode = ws.ExitStatus()
		}
	}
	es.OOMKilled = a.c.OOMKilled()
	switch {
	case es.OOMKilled:
		es.Reason = "OOMKilled"
	case es.ExitCode == 0:
		es.Reason = "Completed"
	default:
		es.Reason = "Error"
	}
	a.drainOutput()
	if a.log != nil {
		a.log.Flush()
	}
	for _, b := range a.broadcasts {
		b.Close() // attach clients drain what is left, then see EOF
	}
	if data, err := json.Marshal(es); err == nil {
		if err := fsutil.WriteFileAtomic(a.params.ExitFile, data, 0o600); err != nil {
			slog.Error("recording exit", "app", a.name, "err", err)
		}
	}
	a.mu.Lock()
	a.status, a.exit = state.AppExited, es
	a.mu.Unlock()
	close(a.exited)
	slog.Info("app exited", "app", a.name, "code", es.ExitCode, "reason", es.Reason)
}

// drainOutput waits for the output pumps to reach EOF, or closes their
// read ends after pumpGrace so a lingering child cannot hold the exit.
func (a *app) drainOutput() {
	done := make(chan struct{})
	go func() { a.pumps.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(pumpGrace):
		for _, f := range a.outputs {
			f.Close()
		}
		<-done
	}
}

func (a *app) snapshot() proto.AppState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := proto.AppState{Name: a.name, ContainerID: a.params.ContainerID, Status: a.status, CreatedAt: a.createdAt, StartedAt: a.startedAt, Exit: a.exit}
	if a.status != state.AppExited {
		st.Pid = a.c.Pid()
	}
	if a.log != nil {
		st.LogWriteErrors = a.log.WriteErrors()
	}
	return st
}

func (a *app) start() (any, error) {
	a.mu.Lock()
	status := a.status
	a.mu.Unlock()
	if err := state.Check("app "+a.name, status, state.AppRunning); err != nil {
		return nil, err
	}
	// The start time is set before the start: an app that exits at once
	// may have its exit recorded before Start returns, and that record
	// must say it started.
	a.mu.Lock()
	a.startedAt = time.Now().UTC()
	a.mu.Unlock()
	if err := a.c.Start(); err != nil {
		a.mu.Lock()
		a.startedAt = time.Time{}
		a.mu.Unlock()
		return nil, err
	}
	a.mu.Lock()
	if a.status == state.AppCreated {
		a.status = state.AppRunning
	}
	a.mu.Unlock()
	return a.snapshot(), nil
}

// stop sends sig (SIGTERM by default) and, if the app is still there
// after timeout, SIGKILL to every process of the app.
func (a *app) stop(sig syscall.Signal, timeout time.Duration) (any, error) {
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	a.mu.Lock()
	status := a.status
	a.mu.Unlock()
	if status == state.AppExited {
		return a.snapshot(), nil
	}
	if status == state.AppRunning && timeout > 0 {
		if a.signalUntilDelivered(sig, timeout) {
			return a.snapshot(), nil
		}
	}
	if err := a.killAndWait(); err != nil {
		return nil, err
	}
	return a.snapshot(), nil
}

// signalUntilDelivered sends sig to the app's init and waits up to timeout
// for the app to exit (true if it did). A signal the kernel dropped (see
// signal.go) is sent again as soon as the app can receive it, once.
func (a *app) signalUntilDelivered(sig syscall.Signal, timeout time.Duration) bool {
	deadline := time.After(timeout)
	pid := a.c.Pid()
	send := func() bool {
		st, err := procSignalState(pid, sig)
		if err := a.c.Signal(sig, false); err != nil && !errors.Is(err, os.ErrProcessDone) {
			slog.Warn("stop signal", "app", a.name, "err", err)
		}
		return err != nil || !st.dropped()
	}
	delivered := send()
	var tick <-chan time.Time
	if !delivered {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-a.exited:
			return true
		case <-deadline:
			return false
		case <-tick:
			st, err := procSignalState(pid, sig)
			if err != nil || st.dropped() {
				continue
			}
			slog.Debug("stop signal was dropped before the app could take it; sending it again", "app", a.name, "signal", sig)
			send()
			tick = nil
		}
	}
}

func (a *app) killAndWait() error {
	if err := a.c.Signal(syscall.SIGKILL, true); err != nil {
		slog.Debug("kill", "app", a.name, "err", err)
	}
	select {
	case <-a.exited:
		return nil
	case <-time.After(10 * time.Second):
		return errdefs.Unavailable("app %s did not exit 10s after SIGKILL", a.name)
	}
}

func (a *app) kill(sig syscall.Signal) error {
	a.mu.Lock()
	status := a.status
	a.mu.Unlock()
	if status == state.AppExited {
		return errdefs.FailedPrecondition("app %s has exited", a.name)
	}
	return a.c.Signal(sig, false)
}

// remove kills the app if it still runs, then removes its container
// (cgroup and libcontainer state) and closes its log.
func (a *app) remove() error {
	a.mu.Lock()
	if a.removed {
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	select {
	case <-a.exited:
	default:
		if err := a.killAndWait(); err != nil {
			return err
		}
	}
	if err := a.c.Destroy(); err != nil {
		return err
	}
	a.closeIO()
	a.mu.Lock()
	a.removed = true
	a.mu.Unlock()
	return nil
}

// stats reads the app's cgroup statistics. A removed app has none.
func (a *app) stats() proto.AppStats {
	out := proto.AppStats{Name: a.name, Timestamp: time.Now().UTC()}
	a.mu.Lock()
	removed := a.removed
	a.mu.Unlock()
	if removed {
		out.Error = "removed"
		return out
	}
	st, err := a.c.Stats()
	out.Timestamp = time.Now().UTC()
	if err != nil {
		out.Error = err.Error()
		return out
	}
	st.Fill(&out)
	return out
}

// update changes the app's cgroup resources; an exited app has no
// cgroup to change.
func (a *app) update(r *specs.LinuxResources) error {
	a.mu.Lock()
	status, removed := a.status, a.removed
	a.mu.Unlock()
	if status == state.AppExited || removed {
		return errdefs.FailedPrecondition("app %s has exited; its resources cannot change", a.name)
	}
	return a.c.Update(r)
}

func (a *app) closeIO() {
	if a.stdin != nil {
		a.stdin.Close()
	}
	for _, f := range a.outputs {
		f.Close()
	}
	if a.log != nil {
		a.log.Close()
	}
}
