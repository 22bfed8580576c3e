package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// A pid namespace cannot be pinned by a file alone: once its first
// process exits the kernel kills everything in it and refuses new
// members. A pod whose apps share one therefore needs a process to hold
// it; the supervisor starts this one (itself, as `pidns-init`, which then
// becomes the tiny holder program of holder.go), pins the namespace at
// the path stage0 asked for, and ends it at shutdown.

// holderStartTimeout bounds how long the supervisor waits for the holder
// to become itself.
const holderStartTimeout = 10 * time.Second

func startPidnsHolder(runDir, pinPath string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "pidns-init")
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the pod's pid namespace holder: %w", err)
	}
	pid := cmd.Process.Pid
	fail := func(err error) (*exec.Cmd, error) {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(proto.HolderPidPath(runDir), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fail(err)
	}
	// It says "ok" once its empty root is in place; its stdout closes at
	// the exec of the holder program (or at its death).
	said := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(bufio.NewReader(out), 256))
		said <- string(b)
	}()
	select {
	case s := <-said:
		if s != "ok\n" {
			return fail(fmt.Errorf("the pod's pid namespace holder failed to start (%q)", strings.TrimSpace(s)))
		}
	case <-time.After(holderStartTimeout):
		return fail(fmt.Errorf("the pod's pid namespace holder did not start within %s", holderStartTimeout))
	}
	if holderCode != nil {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != "/init" {
			return fail(fmt.Errorf("the pod's pid namespace holder is not running its program (exe %q): %v", exe, err))
		}
	}
	f, err := os.OpenFile(pinPath, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err == nil {
		f.Close()
		err = unix.Mount(fmt.Sprintf("/proc/%d/ns/pid", pid), pinPath, "", unix.MS_BIND, "")
	}
	if err != nil {
		os.Remove(pinPath)
		return fail(fmt.Errorf("pin the pod's pid namespace at %s: %w", pinPath, err))
	}
	return cmd, nil
}

// stopPidnsHolder kills the holder and waits until gone (closed by the
// goroutine that waits for it) says it was reaped.
func stopPidnsHolder(cmd *exec.Cmd, gone <-chan struct{}, runDir, pinPath string) {
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-gone
	unpinPidNS(runDir, pinPath)
}

// unpinPidNS removes the pin of a holder that is gone, and its pid file.
func unpinPidNS(runDir, pinPath string) {
	unix.Unmount(pinPath, unix.MNT_DETACH)
	if err := os.Remove(pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return
	}
	os.Remove(proto.HolderPidPath(runDir))
}

// PidnsInit is `stage1-runc pidns-init`: it becomes the holder program,
// saying "ok" on stdout first; it returns only on failure.
func PidnsInit() int {
	if holderCode == nil {
		os.Stdout.WriteString("ok\n")
		os.Stdout.Close()
		goHolder()
	}
	err := becomeHolder(os.Args, func() error {
		_, err := os.Stdout.WriteString("ok\n")
		return err
	})
	fmt.Fprintf(os.Stderr, "pidns-init: %v\n", err)
	return holderExitCode
}

// goHolder is the holder where holder.go has no program for the
// architecture: this Go process stays pid 1, ignores what the Go runtime
// lets it ignore and reaps orphans. It has the host's root and
// capabilities; see docs/architecture.md.
func goHolder() {
	sigs := make(chan os.Signal, 8)
	signalNotify(sigs)
	for range sigs {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
