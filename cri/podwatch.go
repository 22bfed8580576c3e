package cri

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A pod is ready only while its supervisor (and, when its apps share a pid
// namespace, that namespace's holder) runs; neither writes anything when
// killed. watchPod waits on a pidfd of each, parked in Go's poller (no
// thread per pod), and re-reads the pod the moment one exits, so that
// PodSandboxStatus says NOTREADY at once instead of at the next resync.

// watchPod starts watching a ready pod's processes; a pod stopped or
// removed meanwhile is simply re-read once more.
func (s *Server) watchPod(podID string) {
	sup, holder := s.rt.PodPids(podID)
	for _, w := range []struct {
		pid  int
		want func(cmdline string) bool
	}{
		{sup, func(c string) bool { return strings.Contains(c, "\x00supervise\x00--pod-id\x00"+podID+"\x00") }},
		{holder, func(c string) bool {
			return strings.HasSuffix(c, "\x00pidns-init\x00") || strings.Contains(c, "\x00ns-holder\x00--pid-ns\x00")
		}},
	} {
		if w.pid <= 0 {
			continue
		}
		f, err := openPidfd(w.pid, w.want)
		if err != nil {
			// Gone already (or not that process any more): say so now.
			s.log.Debug("pod process not watchable; re-reading the pod", "pod", podID, "pid", w.pid, "err", err)
			go s.refreshPod(context.Background(), podID)
			continue
		}
		go func() {
			defer f.Close()
			if waitExit(f) == nil {
				s.refreshPod(context.Background(), podID)
			}
		}()
	}
}

// openPidfd opens a pollable pidfd for pid, checking after the open that
// pid is the process wanted (its cmdline), not a reuse.
func openPidfd(pid int, want func(string) bool) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !want(string(b)) {
		f.Close()
		return nil, errors.New("not the pod's process")
	}
	return f, nil
}

// waitExit blocks (in the poller) until the pidfd's process exits.
func waitExit(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	first := true
	return rc.Read(func(uintptr) bool {
		if first { // not yet known readable: wait for it
			first = false
			return false
		}
		return true
	})
}
