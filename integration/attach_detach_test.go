package integration

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAttachDetachOnTerminal attaches `runclet attach` to a tty app
// through a real pty and detaches with ctrl-p ctrl-q and with custom
// --detach-keys: runclet must exit 0 without panicking (the terminal
// restore once ran twice: "close of closed channel"), say it detached,
// leave the app running and give the terminal back in the mode it found
// it (not raw).
func TestAttachDetachOnTerminal(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	pi.run("run", "-d", "--name", "attachtty", "-i", "-t", img, "--", "sh")

	for _, tc := range []struct {
		name string
		args []string
		keys []byte
	}{
		{"default keys", nil, []byte{16, 17}},                                   // ctrl-p ctrl-q
		{"custom keys", []string{"--detach-keys", "ctrl-x,x"}, []byte{24, 'x'}}, // ctrl-x x
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slavePath := openPty(t)
			defer master.Close()
			slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "attach"}, tc.args...)
			cmd := exec.Command(runcletBin, append(args, "attachtty")...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var seen bytes.Buffer
			go func() {
				b := make([]byte, 4096)
				for {
					n, err := master.Read(b)
					mu.Lock()
					seen.Write(b[:n])
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
			output := func() string { mu.Lock(); defer mu.Unlock(); return seen.String() }
			// Wait until the session is live: the shell answers.
			master.Write([]byte("echo alive-$((40+2))\r"))
			deadline := time.Now().Add(15 * time.Second)
			for !strings.Contains(output(), "alive-42") && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if !strings.Contains(output(), "alive-42") {
				t.Fatalf("attached shell never answered; terminal showed %q", output())
			}
			raw, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if raw.Lflag&unix.ICANON != 0 {
				t.Fatalf("attach did not put the terminal in raw mode (lflag %#x)", raw.Lflag)
			}
			master.Write(tc.keys)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("attach did not exit after the detach keys; terminal showed %q", output())
			}
			time.Sleep(100 * time.Millisecond) // let the reader drain the last output
			if err != nil {
				t.Fatalf("detaching should exit 0: %v; terminal showed %q", err, output())
			}
			if out := output(); strings.Contains(out, "panic") || !strings.Contains(out, "detached from") {
				t.Fatalf("want a detach message and no panic; terminal showed %q", out)
			}
			after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if *after != *before {
				t.Fatalf("terminal not restored:\nbefore %+v\nafter  %+v", *before, *after)
			}
			slave.Close()
			p := pi.status("attachtty")
			if p.State != "ready" || p.Apps[0].State != "running" {
				t.Fatalf("after detach the app should run on: %+v", p)
			}
		})
	}
}
