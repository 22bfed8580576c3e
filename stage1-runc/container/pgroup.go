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
// pidfdGroupSignals is false in tests of the older kernels' path.
var pidfdGroupSignals = true

type pgroup struct {
	mu    sync.Mutex
	pidfd int // -1: none (closed, or could not be opened)
	pid   int
}

func openPgroup(pid int) *pgroup {
	g := &pgroup{pidfd: -1, pid: pid}
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
// process itself.
func (g *pgroup) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pidfd < 0 {
		return
	}
	if !pidfdGroupSignals {
		g.killGroupByID()
	} else if err := unix.PidfdSendSignal(g.pidfd, unix.SIGKILL, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP); err != nil && !errors.Is(err, unix.ESRCH) {
		// EINVAL: kernels before 6.9 (Debian 12's 6.1, Ubuntu 22.04's
		// 5.15) cannot signal a group through a pidfd.
		g.killGroupByID()
	}
	unix.PidfdSendSignal(g.pidfd, unix.SIGKILL, nil, 0)
}

// killGroupByID is kill(-pid) for kernels without pidfd group signals,
// sent only while the leader has not been reaped (a signal 0 through the
// pidfd fails with ESRCH once it has): until then its pid, and so its group
// id, cannot name anyone else. Called with g.mu held.
func (g *pgroup) killGroupByID() {
	if g.pid <= 0 || unix.PidfdSendSignal(g.pidfd, 0, nil, 0) != nil {
		return
	}
	unix.Kill(-g.pid, unix.SIGKILL)
}

func (g *pgroup) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pidfd >= 0 {
		unix.Close(g.pidfd)
		g.pidfd = -1
	}
}
