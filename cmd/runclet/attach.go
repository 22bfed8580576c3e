package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/tty/stream"
)

// localTerminal puts stdin in raw mode for a tty session and feeds
// SIGWINCH-driven sizes into a channel; restore undoes both.
type localTerminal struct {
	resize  chan pod.Size
	restore func()
}

func newLocalTerminal(tty bool) (*localTerminal, error) {
	lt := &localTerminal{restore: func() {}}
	fd := int(os.Stdin.Fd())
	if !tty || !term.IsTerminal(fd) {
		return lt, nil
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	lt.resize = make(chan pod.Size, 4)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	send := func() {
		if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
			select {
			case lt.resize <- pod.Size{Width: uint16(w), Height: uint16(h)}:
			default:
			}
		}
	}
	send()
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-winch:
				send()
			case <-done:
				return
			}
		}
	}()
	// restore runs at most once: attachSession restores before printing
	// the detach message and again in its deferred cleanup.
	var once sync.Once
	lt.restore = func() {
		once.Do(func() {
			signal.Stop(winch)
			close(done)
			term.Restore(fd, old)
		})
	}
	return lt, nil
}

// resolveApp finds POD [APP]: APP may be omitted when the pod has one app.
func resolveApp(ctx context.Context, m *pod.Manager, args []string) (*pod.Pod, *pod.App, error) {
	p, err := m.FindPod(args[0])
	if err != nil {
		return nil, nil, err
	}
	_, apps, err := m.PodStatus(ctx, p.ID)
	if err != nil {
		return nil, nil, err
	}
	var found *pod.App
	for _, a := range apps {
		if len(args) == 1 || a.ID == args[1] || a.Name == args[1] || len(args[1]) >= 4 && strings.HasPrefix(a.ID, args[1]) {
			if found != nil && len(args) == 1 {
				return nil, nil, errdefs.InvalidArgument("pod %s has several apps: name one", p.ID)
			}
			found = a
		}
	}
	if found == nil {
		return nil, nil, errdefs.NotFound("no such app in pod %s", p.ID)
	}
	return p, found, nil
}

func attachCommand(g *globals) *cobra.Command {
	var noStdin bool
	var detachKeys string
	c := &cobra.Command{
		Use:   "attach POD [APP]",
		Short: "Attach to a running app's stdio (detach with ctrl-p,ctrl-q on a terminal)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			p, a, err := resolveApp(cmd.Context(), m, args)
			if err != nil {
				return err
			}
			code, err := attachSession(cmd.Context(), m, p.ID, a, !noStdin && a.Stdin, detachKeys)
			if err != nil {
				return err
			}
			if code > 0 {
				return exitError(code)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&noStdin, "no-stdin", false, "do not forward stdin")
	c.Flags().StringVar(&detachKeys, "detach-keys", stream.DefaultDetachKeys, "key sequence that detaches (empty: none)")
	return c
}

// attachSession attaches the local terminal or stdio to an app and
// returns its exit code (-1 when detached).
func attachSession(ctx context.Context, m *pod.Manager, podID string, a *pod.App, withStdin bool, detachKeys string) (int, error) {
	keys, err := stream.ParseDetachKeys(detachKeys)
	if err != nil {
		return -1, errdefs.InvalidArgument("--detach-keys: %w", err)
	}
	lt, err := newLocalTerminal(a.Tty)
	if err != nil {
		return -1, err
	}
	defer lt.restore()
	s := pod.Streams{Stdout: os.Stdout, Stderr: os.Stderr, Tty: a.Tty, Resize: lt.resize}
	if withStdin {
		s.Stdin = stream.NewDetachReader(os.Stdin, keys)
	}
	code, err := m.Attach(ctx, podID, a.ID, s)
	if err == nil && code < 0 && withStdin {
		lt.restore()
		fmt.Fprintln(os.Stderr, "\r\ndetached from", a.Name)
	}
	return code, err
}

func execCommand(g *globals) *cobra.Command {
	var interactive, tty bool
	var env []string
	var workdir string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "exec [-i] [-t] POD [APP] -- CMD [ARGS...]",
		Short: "Run a command inside a running app (its user, namespaces, cgroup, seccomp)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash < 1 || dash == len(args) {
				return errdefs.InvalidArgument("usage: runclet exec [-i] [-t] POD [APP] -- CMD [ARGS...]")
			}
			code, err := runExec(cmd.Context(), g, args[:dash], pod.ExecConfig{Cmd: args[dash:], Env: env, Cwd: workdir, Timeout: timeout}, interactive, tty)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&interactive, "interactive", "i", false, "forward stdin")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	c.Flags().StringArrayVarP(&env, "env", "e", nil, "extra environment KEY=VALUE")
	c.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory (default: the app's)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long")
	return c
}

func runExec(ctx context.Context, g *globals, target []string, cfg pod.ExecConfig, interactive, tty bool) (int, error) {
	m, _, err := g.podManager()
	if err != nil {
		return -1, err
	}
	p, a, err := resolveApp(ctx, m, target)
	if err != nil {
		return -1, err
	}
	lt, err := newLocalTerminal(tty)
	if err != nil {
		return -1, err
	}
	defer lt.restore()
	s := pod.Streams{Stdout: os.Stdout, Stderr: os.Stderr, Tty: tty, Resize: lt.resize}
	if interactive {
		s.Stdin = os.Stdin
	}
	return m.Exec(ctx, p.ID, a.ID, cfg, s)
}

func enterCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "enter POD [APP]",
		Short: "Open a shell inside a running app (exec -i -t /bin/sh)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tty := term.IsTerminal(int(os.Stdin.Fd()))
			code, err := runExec(cmd.Context(), g, args, pod.ExecConfig{Cmd: []string{"/bin/sh"}}, true, tty)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
}

// runInteractive is `runclet run -i/-t`: attach before start so no output
// is missed, then start, and return the exit code when the session ends.
func runInteractive(ctx context.Context, m *pod.Manager, a *pod.App, stdin bool) (int, error) {
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	attached := make(chan struct{})
	go func() {
		// Attach returns once the app exits; start it once the attach is up.
		code, err := attachWhenReady(ctx, m, a, stdin, attached)
		done <- result{code, err}
	}()
	select {
	case <-attached:
	case r := <-done:
		return r.code, r.err
	}
	if _, err := m.StartApp(ctx, a.PodID, a.ID); err != nil {
		return -1, err
	}
	r := <-done
	if r.err != nil || r.code >= 0 {
		return r.code, r.err
	}
	// Detached: the app goes on.
	return 0, errDetached
}

var errDetached = errors.New("detached")

func attachWhenReady(ctx context.Context, m *pod.Manager, a *pod.App, stdin bool, attached chan<- struct{}) (int, error) {
	lt, err := newLocalTerminal(a.Tty)
	if err != nil {
		close(attached)
		return -1, err
	}
	defer lt.restore()
	s := pod.Streams{Stdout: os.Stdout, Stderr: os.Stderr, Tty: a.Tty, Resize: lt.resize}
	if stdin {
		keys, _ := stream.ParseDetachKeys(stream.DefaultDetachKeys)
		s.Stdin = stream.NewDetachReader(os.Stdin, keys)
	}
	s.Attached = func() { close(attached) }
	return m.Attach(ctx, a.PodID, a.ID, s)
}
