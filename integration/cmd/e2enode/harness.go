package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// scenario is one end-to-end check.
type scenario struct {
	name string
	// serial scenarios run alone, after all the parallel ones.
	serial bool
	// runcletOnly, when set, is why the scenario is skipped on another
	// runtime.
	runcletOnly string
	limit       time.Duration // default 4 minutes
	run         func(t *T) error
}

func (s scenario) timeout() time.Duration {
	if s.limit == 0 {
		return 4 * time.Minute
	}
	return s.limit
}

// T is a running scenario: its context, the cluster, and what to undo.
type T struct {
	ctx      context.Context
	c        *cluster
	name     string
	notes    []string
	mu       sync.Mutex
	cleanups []func()
}

// note adds a line printed under the scenario's result.
func (t *T) note(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *T) defer_(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *T) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

const podsPath = "/api/v1/namespaces/default/pods"

// createPod creates pod name in the default namespace, bound to the node,
// from spec (the YAML of the pod's spec without nodeName, indented from
// column 0). The pod is deleted (grace 0) when the scenario ends.
func (t *T) createPod(name, spec string) error {
	m := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  labels: {e2enode: " + t.name + "}\nspec:\n  nodeName: \"" + nodeName + "\"\n" + indent(dedent(spec), "  ")
	if err := t.c.api.create(t.ctx, podsPath, m); err != nil {
		return fmt.Errorf("creating pod %s: %w\n%s", name, err, m)
	}
	t.defer_(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t.c.api.delete(ctx, podsPath+"/"+name, 0)
	})
	return nil
}

func (t *T) getPod(name string) (*pod, error) {
	var p pod
	if err := t.c.api.get(t.ctx, podsPath+"/"+name, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// waitPod polls pod name until cond holds (cond may return an error to
// fail at once, e.g. on a state that can never turn good).
func (t *T) waitPod(name string, timeout time.Duration, what string, cond func(*pod) (bool, error)) (*pod, error) {
	deadline := time.Now().Add(timeout)
	var last *pod
	for {
		p, err := t.getPod(name)
		if err == nil {
			last = p
			ok, err := cond(p)
			if err != nil {
				return p, fmt.Errorf("pod %s: %w (%s)", name, err, p.summary())
			}
			if ok {
				return p, nil
			}
		}
		if time.Now().After(deadline) || t.ctx.Err() != nil {
			if last == nil {
				return nil, fmt.Errorf("pod %s: waiting for %s: %v", name, what, err)
			}
			return last, fmt.Errorf("pod %s: not %s after %v (%s)", name, what, timeout, last.summary())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// running waits until every container of pod name is running (and,
// when ready, Ready).
func (t *T) running(name string, ready bool) (*pod, error) {
	what := "running"
	if ready {
		what = "running and ready"
	}
	return t.waitPod(name, 90*time.Second, what, func(p *pod) (bool, error) {
		if p.Status.Phase == "Failed" || p.Status.Phase == "Succeeded" {
			return false, fmt.Errorf("phase %s", p.Status.Phase)
		}
		if p.Status.Phase != "Running" || len(p.Status.ContainerStatuses) == 0 {
			return false, nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running == nil || (ready && !cs.Ready) {
				return false, nil
			}
		}
		return true, nil
	})
}

// kubectl runs kubectl with stdin and returns its stdout, stderr and exit
// code; err is set only when it could not be run or timed out.
func (t *T) kubectl(stdin string, args ...string) (string, string, int, error) {
	ctx, cancel := context.WithTimeout(t.ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.c.kubectlPath(), append([]string{"--kubeconfig", t.c.kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return out.String(), errOut.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.String(), errOut.String(), -1, fmt.Errorf("kubectl %s: %w (stderr: %s)", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), errOut.String(), 0, nil
}

// kubectlOK is kubectl that must exit 0; it returns stdout.
func (t *T) kubectlOK(args ...string) (string, error) {
	out, errOut, code, err := t.kubectl("", args...)
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, fmt.Errorf("kubectl %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(errOut))
	}
	return out, nil
}

// syncBuf is a bytes.Buffer safe for one writer and many readers.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bgCmd is a kubectl running in the background (logs -f, attach,
// port-forward, exec -it), stopped by its PID when done.
type bgCmd struct {
	cmd     *exec.Cmd
	out     *syncBuf // stdout and stderr (or the terminal's output)
	stdin   io.WriteCloser
	ptyFile *os.File
	done    chan struct{}
	err     error
}

// kubectlBG starts kubectl in the background. With withStdin its stdin is
// a pipe (bgCmd.stdin); else /dev/null.
func (t *T) kubectlBG(withStdin bool, args ...string) (*bgCmd, error) {
	cmd := exec.Command(t.c.kubectlPath(), append([]string{"--kubeconfig", t.c.kubeconfig}, args...)...)
	b := &bgCmd{cmd: cmd, out: &syncBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = b.out, b.out
	if withStdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		b.stdin = w
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { b.err = cmd.Wait(); close(b.done) }()
	t.defer_(b.stop)
	return b, nil
}

// kubectlPTY starts kubectl with a new pseudo-terminal (rows x cols) as
// its controlling terminal and stdio; the test reads and writes the
// master side.
func (t *T) kubectlPTY(rows, cols uint16, args ...string) (*bgCmd, error) {
	master, slave, err := openPTY()
	if err != nil {
		return nil, err
	}
	defer slave.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		master.Close()
		return nil, err
	}
	cmd := exec.Command(t.c.kubectlPath(), append([]string{"--kubeconfig", t.c.kubeconfig}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	b := &bgCmd{cmd: cmd, out: &syncBuf{}, done: make(chan struct{}), ptyFile: master, stdin: master}
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, err
	}
	copied := make(chan struct{})
	go func() { io.Copy(b.out, master); close(copied) }()
	go func() {
		b.err = cmd.Wait()
		// Let the output the terminal still holds be read (EIO once the
		// slave has no more users ends the copy).
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		close(b.done)
	}()
	t.defer_(b.stop)
	return b, nil
}

// openPTY opens a new pseudo-terminal pair without an external package:
// /dev/ptmx, unlock, then the slave /dev/pts/N.
func openPTY() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlocking pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	name := fmt.Sprintf("/dev/pts/%d", n)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("opening %s: %w", name, err)
	}
	return master, os.NewFile(uintptr(sfd), name), nil
}

// waitOutput waits until the command's output matches re.
func (b *bgCmd) waitOutput(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(b.out.String()); m != nil {
			return m, nil
		}
		select {
		case <-b.done:
			if m := re.FindStringSubmatch(b.out.String()); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("kubectl exited (%v) before printing %q; output: %s", b.err, re, clip(b.out.String(), 600))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("no %q in kubectl's output after %v; output: %s", re, timeout, clip(b.out.String(), 600))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wait waits for the command to exit by itself and returns its exit code.
func (b *bgCmd) wait(timeout time.Duration) (int, error) {
	select {
	case <-b.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("kubectl did not exit in %v; output: %s", timeout, clip(b.out.String(), 600))
	}
	var ee *exec.ExitError
	if errors.As(b.err, &ee) {
		return ee.ExitCode(), nil
	}
	if b.err != nil {
		return -1, b.err
	}
	return 0, nil
}

// stop kills the command (by its PID) if it still runs.
func (b *bgCmd) stop() {
	select {
	case <-b.done:
	default:
		b.cmd.Process.Kill()
		<-b.done
	}
	if b.ptyFile != nil {
		b.ptyFile.Close()
	} else if b.stdin != nil {
		b.stdin.Close()
	}
}

// dedent removes the common leading whitespace of s's non-empty lines and
// a leading newline, so manifests can be written as indented raw strings.
func dedent(s string) string {
	s = strings.TrimLeft(s, "\n")
	lines := strings.Split(s, "\n")
	prefix := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if prefix < 0 || n < prefix {
			prefix = n
		}
	}
	for i, l := range lines {
		if len(l) >= prefix && prefix > 0 {
			lines[i] = l[prefix:]
		}
	}
	return strings.Join(lines, "\n")
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
