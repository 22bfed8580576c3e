package container

import (
	"os"
	"sync"
	"syscall"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/runclet/runclet/internal/errdefs"
)

// ExecSpec overrides the app's own process for an exec: everything not
// given (user, capabilities, no_new_privs, rlimits, apparmor) is the
// app's, as with `runc exec`, and the container's seccomp filter and
// cgroup apply because the process joins the container.
type ExecSpec struct {
	Args []string
	Env  []string // appended to the app's environment
	Cwd  string
	Tty  bool
	// Width and Height are the initial terminal size with Tty.
	Width, Height uint16
}

// Proc is a process running inside an app's container.
type Proc struct {
	p        *libcontainer.Process
	group    *pgroup
	waitOnce sync.Once
	state    *os.ProcessState
	waitErr  error
}

// Exec starts a process inside the running app.
func (a *App) Exec(es ExecSpec, stdio Stdio) (*Proc, error) {
	if len(es.Args) == 0 {
		return nil, errdefs.InvalidArgument("exec: no command")
	}
	p := newProcess(a.spec.Process)
	p.Args = es.Args
	p.Env = append(append([]string{}, a.spec.Process.Env...), es.Env...)
	if es.Cwd != "" {
		p.Cwd = es.Cwd
	}
	p.Init = false
	if es.Tty {
		p.ConsoleSocket = stdio.ConsoleSocket
		p.ConsoleWidth, p.ConsoleHeight = es.Width, es.Height
	} else {
		p.Stdout, p.Stderr = stdio.Stdout, stdio.Stderr
		if stdio.Stdin != nil {
			p.Stdin = stdio.Stdin
		}
	}
	if err := a.c.Run(p); err != nil {
		return nil, explainStartError(a.c.ID(), es.Args, err)
	}
	// Nobody has waited for it yet, so the pid still names it.
	pid, _ := p.Pid()
	return &Proc{p: p, group: openPgroup(pid)}, nil
}

// Pid is the exec'd process.
func (pr *Proc) Pid() int {
	pid, _ := pr.p.Pid()
	return pid
}

// Wait waits for the process; callable many times.
func (pr *Proc) Wait() (*os.ProcessState, error) {
	pr.waitOnce.Do(func() { pr.state, pr.waitErr = pr.p.Wait() })
	return pr.state, pr.waitErr
}

// Kill sends SIGKILL to the process and to its process group, which its
// non-daemonized children share: a timed-out exec must not leave a
// background child behind holding its output open. It goes through a
// pidfd, so a Kill after the process was reaped (the client leaving after
// the exit) signals nobody else, whatever reused its pid.
func (pr *Proc) Kill() { pr.group.kill() }

// Close releases the process's pidfd; Kill does nothing after it.
func (pr *Proc) Close() { pr.group.close() }

// ExitCode turns a wait result into a shell-style exit code.
func ExitCode(st *os.ProcessState, err error) (code, signal int, errMsg string) {
	if st == nil {
		msg := "no exit status"
		if err != nil {
			msg = err.Error()
		}
		return 255, 0, msg
	}
	ws := st.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), int(ws.Signal()), ""
	}
	return ws.ExitStatus(), 0, ""
}
