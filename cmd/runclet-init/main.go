// Command runclet-init is the tiny init `runclet run --init` puts in
// front of an app: it runs the app as its child, forwards the signals it
// gets to it, reaps every process that ends up its child (orphans of the
// app included, which a pid 1 that does not wait leaves as zombies), and
// exits with the app's status (128+N when a signal N ended it). It is
// built static (CGO_ENABLED=0) so that it runs in any image; runclet
// bind-mounts it at /dev/init.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: runclet-init [--] COMMAND [ARGS...]")
		os.Exit(125)
	}
	// Not pid 1 (a shared pid namespace): still adopt the app's orphans.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The app leads its own process group on the same terminal, so a
	// terminal's ctrl-c reaches it as it would without init.
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "runclet-init:", err)
		if os.IsNotExist(err) || isNotFound(err) {
			os.Exit(127)
		}
		os.Exit(126)
	}
	child := cmd.Process.Pid
	for {
		sig := <-sigs
		if sig == syscall.SIGCHLD {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
				if pid == child {
					switch {
					case ws.Exited():
						os.Exit(ws.ExitStatus())
					case ws.Signaled():
						os.Exit(128 + int(ws.Signal()))
					}
				}
			}
			continue
		}
		if s, ok := sig.(syscall.Signal); ok && s != syscall.SIGURG {
			syscall.Kill(child, s)
		}
	}
}

func isNotFound(err error) bool {
	ee, ok := err.(*exec.Error)
	return ok && ee.Err == exec.ErrNotFound
}
