package pod

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/stage1-runc/proto"
)

// A ready pod is only as alive as the processes that hold it: its
// supervisor (which owns the apps) and, for a pod whose apps share a pid
// namespace, the namespace's holder (pid 1 there: when it goes, the
// kernel kills every app and refuses new ones). checkAlive marks a pod
// that lost either Broken, which the CRI reports as NOTREADY so that
// kubelet recreates it; removing it still cleans up.

// PodPids are the host pids of a pod's supervisor and of its pid
// namespace's holder (0: none recorded), as their pid files say. Who
// watches them must check they still are those processes (pids are
// reused): Processes re-reads them after opening a handle.
func (m *Manager) PodPids(podID string) (supervisor, holder int) {
	dir := m.l.RunDir(podID)
	return readPidFile(proto.PidPath(dir)), readPidFile(proto.HolderPidPath(dir))
}

func readPidFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// checkAlive sets p.Broken when the pod is ready on disk but its
// supervisor or pid namespace holder is gone, and then reports the apps
// that are not running any more as exited (the supervisor that would
// have recorded their exit is gone, or they died with the namespace).
func (m *Manager) checkAlive(ctx context.Context, p *Pod, apps []*App) {
	if p.State != PodReady {
		return
	}
	supervisor := m.SupervisorAlive(ctx, p.ID)
	switch {
	case !supervisor:
		p.Broken = "the pod supervisor is not running"
	case p.PIDNS != "" && !m.holderAlive(p.ID):
		p.Broken = "the pod's pid namespace holder is not running"
	default:
		return
	}
	if supervisor {
		return // it records the exits of the apps it still has
	}
	for _, a := range apps {
		if a.State == AppExited {
			continue
		}
		if a.Pid > 0 && appProcessAlive(a) {
			a.State, a.Reason, a.Message = AppUnknown, "Unknown", p.Broken
			continue
		}
		if a.State == AppRunning {
			a.State, a.ExitCode, a.Reason, a.Message = AppExited, 255, "Unknown", p.Broken+"; the app's exit was not recorded"
			if a.FinishedAt.IsZero() {
				a.FinishedAt = time.Now().UTC()
			}
		}
	}
}

// holderAlive says whether the recorded holder of a pod's pid namespace
// still runs.
func (m *Manager) holderAlive(podID string) bool {
	_, pid := m.PodPids(podID)
	return pid > 0 && isPidnsHolder(pid)
}

// appProcessAlive says whether an app's recorded init process still runs
// (a zombie does not) in the app's cgroup (a reused pid is somebody
// else's).
func appProcessAlive(a *App) bool {
	proc := "/proc/" + strconv.Itoa(a.Pid)
	stat, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	b, err := os.ReadFile(proc + "/cgroup")
	return err == nil && strings.Contains(string(b), a.ID)
}

// killHolder ends a pid namespace holder that outlived its supervisor and
// waits (at most 5 s) until it is gone, so that nothing of the pod is
// left when its removal returns. The pidfd is opened before the identity
// check, so the signal cannot reach a process that reused the pid.
func killHolder(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // gone
	}
	defer unix.Close(fd)
	if !isPidnsHolder(pid) {
		return
	}
	if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) != nil {
		return
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1); n > 0 || (err != nil && err != unix.EINTR) {
			return
		}
	}
}
