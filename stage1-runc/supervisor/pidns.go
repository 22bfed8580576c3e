package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/runtime/fsutil"
)

// A pid namespace cannot be pinned by a file alone: once its first
// process exits the kernel kills everything in it and refuses new
// members. A pod whose apps share one therefore needs a process to hold
// it; the supervisor starts this one (itself, as `pidns-init`), pins the
// namespace at the path stage0 asked for, and ends it at shutdown.

// pidnsHolderPid is where the holder's pid is kept, so that stage0 can end
// it should the supervisor die first.
func pidnsHolderPid(runDir string) string { return filepath.Join(runDir, "pidns-init.pid") }

func startPidnsHolder(runDir, pinPath string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "pidns-init")
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the pod's pid namespace holder: %w", err)
	}
	pid := cmd.Process.Pid
	if err := fsutil.WriteFileAtomic(pidnsHolderPid(runDir), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	f, err := os.OpenFile(pinPath, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err == nil {
		f.Close()
		err = unix.Mount(fmt.Sprintf("/proc/%d/ns/pid", pid), pinPath, "", unix.MS_BIND, "")
	}
	if err != nil {
		os.Remove(pinPath)
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("pin the pod's pid namespace at %s: %w", pinPath, err)
	}
	return cmd, nil
}

func stopPidnsHolder(cmd *exec.Cmd, runDir, pinPath string) {
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	cmd.Wait()
	unix.Unmount(pinPath, unix.MNT_DETACH)
	if err := os.Remove(pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return
	}
	os.Remove(pidnsHolderPid(runDir))
}

// PidnsInit is the holder's whole life: pid 1 of the pod's namespace,
// reaping whatever is reparented to it until it is killed.
func PidnsInit() {
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
