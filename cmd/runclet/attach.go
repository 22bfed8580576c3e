package main

import (
	"cmp"
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
		if len(args) == 1 {
			return nil, nil, errdefs.NotFound("pod %s has no apps", p.ID)
		}
		var names []string
		for _, a := range apps {
			names = append(names, a.Name)
		}
		return nil, nil, errdefs.NotFound("app %q not found in pod %s (its apps: %s)", args[1], p.ID, strings.Join(names, ", "))
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
			if err := podRunning(p); err != nil {
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
		Use:   "exec [-i] [-t] [-e K=V] [-w DIR] POD [APP] CMD [ARGS...]",
		Short: "Run a command inside a running app (its user, namespaces, cgroup, seccomp)",
		Long: `Run a command inside a running app (its user, namespaces, cgroup, seccomp).

Flags come before POD: everything after POD [APP] is the command and its
arguments. The second word is the app when the pod has an app of that name
or ID (or ID prefix) and a command follows; otherwise it is the command and
the pod's only app is used. "--" may separate the command explicitly:
runclet exec POD [APP] -- CMD [ARGS...]. With -t, TERM is the client's
(xterm when unset) unless -e sets it.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			target, command, err := splitExecArgs(cmd.Context(), m, args, cmd.ArgsLenAtDash())
			if err != nil {
				return err
			}
			if tty && !hasEnv(env, "TERM") {
				t := os.Getenv("TERM")
				if t == "" {
					t = "xterm"
				}
				env = append(env, "TERM="+t)
			}
			code, err := runExec(cmd.Context(), m, target, pod.ExecConfig{Cmd: command, Env: env, Cwd: workdir, Timeout: timeout}, interactive, tty)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
	// Flags end at POD: `exec POD ls -l` passes -l to ls, as podman does.
	c.Flags().SetInterspersed(false)
	c.Flags().BoolVarP(&interactive, "interactive", "i", false, "forward stdin")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	c.Flags().StringArrayVarP(&env, "env", "e", nil, "extra environment KEY=VALUE")
	c.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory (default: the app's)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long")
	return c
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			return true
		}
	}
	return false
}

// splitExecArgs splits exec's arguments into POD [APP] and the command.
// dash is cobra's position of a "--" given before POD; a "--" right after
// POD or POD APP is the separator too (flag parsing stopped at POD, so it
// is still in args).
func splitExecArgs(ctx context.Context, m *pod.Manager, args []string, dash int) (target, command []string, err error) {
	usage := errdefs.InvalidArgument("usage: runclet exec [-i] [-t] POD [APP] CMD [ARGS...]")
	if dash == 0 {
		dash = -1 // "exec -- POD ...": the dash only ended the flags
	}
	if dash < 0 {
		for i := 1; i <= 2 && i < len(args); i++ {
			if args[i] == "--" {
				dash = i
				args = append(args[:i:i], args[i+1:]...)
				break
			}
		}
	}
	if dash > 0 {
		if dash > 2 || dash == len(args) {
			return nil, nil, usage
		}
		return args[:dash], args[dash:], nil
	}
	if len(args) >= 3 {
		p, err := m.FindPod(args[0])
		if err != nil {
			return nil, nil, err
		}
		apps, err := m.Layout().ListApps(p.ID)
		if err != nil {
			return nil, nil, err
		}
		for _, a := range apps {
			if a.ID == args[1] || a.Name == args[1] || len(args[1]) >= 4 && strings.HasPrefix(a.ID, args[1]) {
				return args[:2], args[2:], nil
			}
		}
	}
	return args[:1], args[1:], nil
}

func runExec(ctx context.Context, m *pod.Manager, target []string, cfg pod.ExecConfig, interactive, tty bool) (int, error) {
	p, a, err := resolveApp(ctx, m, target)
	if err != nil {
		return -1, err
	}
	if err := runningApp(p, a); err != nil {
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

// runningApp says plainly why a command cannot reach an app, before
// anything dials a supervisor that a stopped pod no longer has.
func runningApp(p *pod.Pod, a *pod.App) error {
	if err := podRunning(p); err != nil {
		return err
	}
	if a.State != pod.AppRunning {
		return errdefs.FailedPrecondition("app %s of pod %s is %s, not running", a.Name, p.ID, a.State)
	}
	return nil
}

func podRunning(p *pod.Pod) error {
	switch {
	case p.Broken != "":
		return errdefs.FailedPrecondition("pod %s is broken (%s): it can only be stopped and removed", p.ID, p.Broken)
	case p.State != pod.PodReady:
		return errdefs.FailedPrecondition("pod %s (%s) is %s: its apps no longer run", p.ID, p.Name, p.State)
	}
	return nil
}

func enterCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "enter POD [APP]",
		Short: "Open a shell inside a running app (exec -i -t /bin/sh)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			tty := term.IsTerminal(int(os.Stdin.Fd()))
			cfg := pod.ExecConfig{Cmd: []string{"/bin/sh"}}
			if tty {
				cfg.Env = []string{"TERM=" + cmp.Or(os.Getenv("TERM"), "xterm")}
			}
			code, err := runExec(cmd.Context(), m, args, cfg, true, tty)
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
