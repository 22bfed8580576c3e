package container

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// pgroup kills an exec'd process and its process group through a pidfd
// opened while the process could not have been reaped (nobody had waited
// for it yet). A pidfd names the process itself, not its number: once
// the process is reaped and its group empty, signalling it reaches
// nobody, where kill(-pid) would reach whatever group reused the number.
type pgroup struct {
	mu    sync.Mutex
	pidfd int // -1: none (closed, or could not be opened)
}

func openPgroup(pid int) *pgroup {
	g := &pgroup{pidfd: -1}
	if pid > 0 {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			unix.CloseOnExec(fd)
			g.pidfd = fd
		}
	}
	return g
}

// kill sends SIGKILL to the process group led by the process (its
// non-daemonized children, even after the leader exited) and to the
// process itself. Kernels before 6.9 cannot signal a group through a
// pidfd: there only the process is killed.
func (g *pgroup) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pidfd < 0 {
		return
	}
	if err := unix.PidfdSendSignal(g.pidfd, unix.SIGKILL, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP); err != nil && !errors.Is(err, unix.ESRCH) {
		unix.PidfdSendSignal(g.pidfd, unix.SIGKILL, nil, 0)
	}
	unix.PidfdSendSignal(g.pidfd, unix.SIGKILL, nil, 0)
}

func (g *pgroup) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pidfd >= 0 {
		unix.Close(g.pidfd)
		g.pidfd = -1
	}
}
