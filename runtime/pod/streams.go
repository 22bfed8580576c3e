package pod

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/stage1-runc/proto"
	"github.com/runclet/runclet/tty/stream"
)

// Size is a terminal size.
type Size struct{ Width, Height uint16 }

// Streams are the caller's ends of an attach or exec. With Tty the app's
// terminal output all goes to Stdout.
type Streams struct {
	Stdin          io.Reader // nil: no stdin
	Stdout, Stderr io.Writer // nil: that stream is not wanted
	Tty            bool
	Resize         <-chan Size
	// Attached, when set, is called once the supervisor has accepted the
	// attach: output from then on reaches Stdout/Stderr.
	Attached func()
}

// ExecConfig is a process to run inside a running app, with the app's
// namespaces, cgroup, user, capabilities and seccomp.
type ExecConfig struct {
	Cmd     []string
	Env     []string // added to the app's environment
	Cwd     string   // "" = the app's
	Timeout time.Duration
}

// ErrTimeout is returned (wrapped, with the class DeadlineExceeded maps
// from) when an exec ran out of time and was killed.
var ErrTimeout = errors.New("exec timed out")

// Attach connects streams to a running app's stdio until the app exits,
// the caller detaches (Stdin returns tty/stream.ErrDetached) or ctx
// ends. It returns the app's exit code when the app exited, else -1.
func (m *Manager) Attach(ctx context.Context, podID, app string, s Streams) (int, error) {
	a, err := m.findApp(podID, app)
	if err != nil {
		return -1, err
	}
	conn, r, err := proto.Dial(ctx, m.l.supervisorSocket(podID), proto.MethodAttach, proto.AttachParams{
		Name: a.ID, Stdin: s.Stdin != nil, Stdout: s.Stdout != nil, Stderr: s.Stderr != nil,
	})
	if err != nil {
		return -1, err
	}
	var res proto.AttachResult
	if err := proto.ReadResponse(r, &res); err != nil {
		conn.Close()
		return -1, err
	}
	if s.Attached != nil {
		s.Attached()
	}
	code, _, err := session(ctx, conn, r, s)
	return code, err
}

// Exec runs a process in a running app and returns its exit code.
func (m *Manager) Exec(ctx context.Context, podID, app string, cfg ExecConfig, s Streams) (int, error) {
	if len(cfg.Cmd) == 0 {
		return -1, errdefs.InvalidArgument("exec: no command")
	}
	a, err := m.findApp(podID, app)
	if err != nil {
		return -1, err
	}
	params := proto.ExecParams{Name: a.ID, Args: cfg.Cmd, Env: cfg.Env, Cwd: cfg.Cwd, Tty: s.Tty, Stdin: s.Stdin != nil, Timeout: cfg.Timeout}
	conn, r, err := proto.Dial(ctx, m.l.supervisorSocket(podID), proto.MethodExec, params)
	if err != nil {
		return -1, err
	}
	var res proto.ExecResult
	if err := proto.ReadResponse(r, &res); err != nil {
		conn.Close()
		return -1, err
	}
	code, msg, err := session(ctx, conn, r, s)
	if err == nil && msg == "timeout" {
		return code, errdefs.DeadlineExceeded("exec %v in app %s: %w after %s", cfg.Cmd, a.Name, ErrTimeout, cfg.Timeout)
	}
	return code, err
}

// session pumps frames both ways until the supervisor sends Exit (code,
// message), the caller detaches or ctx ends (-1).
func session(ctx context.Context, conn net.Conn, r *bufio.Reader, s Streams) (int, string, error) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var mu sync.Mutex
	detached := make(chan struct{})
	if s.Stdin != nil {
		go func() {
			w := stream.NewFrameWriter(conn, &mu, stream.Stdin)
			_, err := io.Copy(w, s.Stdin)
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, stream.ErrDetached) {
				stream.WriteFrame(conn, stream.Detach, nil)
				close(detached)
				return
			}
			stream.WriteFrame(conn, stream.StdinClose, nil)
		}()
	}
	if s.Resize != nil {
		go func() {
			for sz := range s.Resize {
				mu.Lock()
				err := stream.WriteFrame(conn, stream.Resize, stream.EncodeResize(sz.Width, sz.Height))
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	code, msg := -1, ""
	gotExit := false
	h := stream.Handlers{
		Stdout: orDiscard(s.Stdout),
		Stderr: orDiscard(s.Stderr),
		Exit:   func(c int, m string) { code, msg, gotExit = c, m, true },
		Detach: func() {},
	}
	err := stream.Demux(r, h)
	select {
	case <-detached:
		return -1, "", nil
	default:
	}
	if gotExit {
		return code, msg, nil
	}
	if ctx.Err() != nil {
		return -1, "", ctx.Err()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return -1, "", errdefs.Unavailable("stream from the pod supervisor: %w", err)
	}
	return -1, "", nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// ReopenLog makes the supervisor reopen an app's log file (after kubelet
// renamed it for rotation); the file exists again when this returns.
func (m *Manager) ReopenLog(ctx context.Context, podID, app string) error {
	a, err := m.findApp(podID, app)
	if err != nil {
		return err
	}
	if a.State != AppRunning {
		return errdefs.FailedPrecondition("app %s is %s, not running", a.Name, a.State)
	}
	return m.call(ctx, podID, proto.MethodReopenLog, proto.NameParams{Name: a.ID}, nil)
}
