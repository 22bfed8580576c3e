package integration

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// exitCodeOf is the exit code of a finished runclet (0 for success).
func exitCodeOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("runclet did not run: %v", err)
	}
	return ee.ExitCode()
}

// TestCLIExitCodes: runclet's own failures exit 125, a command that
// cannot be run 126, one not found 127, and otherwise the app's or the
// exec'd command's own code, as podman's and docker's scripts expect.
func TestCLIExitCodes(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"app's code", []string{"run", "--rm", img, "--", "sh", "-c", "exit 3"}, 3, ""},
		{"app's 125 passes through", []string{"run", "--rm", img, "--", "sh", "-c", "exit 125"}, 125, ""},
		{"command not found", []string{"run", "--rm", img, "--", "no-such-command"}, 127, `"no-such-command": not found in the image`},
		{"command not executable", []string{"run", "--rm", img, "--", "/etc/passwd"}, 126, "permission denied"},
		{"unknown flag", []string{"run", "--no-such-flag", img}, 125, "unknown flag"},
		{"unknown command", []string{"no-such-command"}, 125, "unknown command"},
		{"no such pod", []string{"status", "no-such-pod"}, 125, "no-such-pod"},
		{"no such image", []string{"image", "inspect", "no-such-image"}, 125, "no-such-image"},
	}
	for _, c := range cases {
		_, stderr, err := pi.try(c.args...)
		if got := exitCodeOf(t, err); got != c.code || !strings.Contains(stderr, c.stderr) {
			t.Errorf("%s: runclet %v: exit %d, stderr %q; want exit %d and %q", c.name, c.args, got, stderr, c.code, c.stderr)
		}
	}
}

// TestCLIExecWithoutDash: exec POD [APP] CMD ARGS... as podman takes it,
// flags before the pod, "--" still accepted; exec's exit codes follow the
// same convention as run's.
func TestCLIExecWithoutDash(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "-d", "--name", "ex", "--app-name", "web", img, "--", "sleep", "300"))
	for _, args := range [][]string{
		{"exec", "ex", "ls", "-d", "/etc"},                      // no app, args with dashes reach ls
		{"exec", "ex", "web", "ls", "-d", "/etc"},               // the app named
		{"exec", podID[:8], "--", "ls", "-d", "/etc"},           // "--" after the pod
		{"exec", "ex", "web", "--", "ls", "-d", "/etc"},         // "--" after the app
		{"exec", "-e", "X=1", "--", "ex", "ls", "-d", "/etc"},   // "--" before the pod
		{"exec", "-w", "/", "ex", "sh", "-c", "ls -d /etc >&1"}, // flags before the pod
	} {
		out, stderr, err := pi.try(args...)
		if err != nil || out != "/etc\n" {
			t.Errorf("runclet %v: %v, stdout %q stderr %q", args, err, out, stderr)
		}
	}
	// Flags after the pod belong to the command.
	if out := pi.run("exec", "ex", "sh", "-c", `echo "$0 $1"`, "-e", "X=1"); out != "-e X=1\n" {
		t.Errorf("flags after the pod: %q", out)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"exec", "ex", "sh", "-c", "exit 4"}, 4},
		{[]string{"exec", "ex", "no-such-command"}, 127},
		{[]string{"exec", "ex", "web", "/etc/passwd"}, 126},
		{[]string{"exec", "ex", "nope", "ls"}, 127}, // "nope" is no app: it is the command
		{[]string{"exec", "no-such-pod", "ls"}, 125},
	} {
		_, stderr, err := pi.try(c.args...)
		if got := exitCodeOf(t, err); got != c.code {
			t.Errorf("runclet %v: exit %d, want %d; stderr %q", c.args, got, c.code, stderr)
		}
	}
}

// TestCLIExecTtyTerm: exec -t on a real terminal gives the command the
// client's TERM, as run -t gives it one.
func TestCLIExecTtyTerm(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "-d", img, "--", "sleep", "300"))
	term := newTerminal(t)
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "exec", "-t", podID, "sh", "-c", `echo "term=[$TERM]"; [ -t 1 ] && exit 6`)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=screen-256color"}
	term.start(cmd)
	term.waitFor("term=[screen-256color]")
	if got := exitCodeOf(t, cmd.Wait()); got != 6 {
		t.Fatalf("exec -t exit %d, want 6 (stdout a terminal); terminal showed %q", got, term.out.String())
	}
}
