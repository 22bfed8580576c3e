package cri

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/internal/unixsock"
)

// DaemonOptions configure Run.
type DaemonOptions struct {
	Options
	// Socket is the unix socket's path.
	Socket string
	// RunRoot holds the daemon's lock (cri.lock): one daemon per run root.
	RunRoot string
	// DataRoot holds its other lock (daemon.lock): one daemon per data
	// root too, whatever its run root.
	DataRoot string
	// StopTimeout bounds the graceful stop.
	StopTimeout time.Duration
}

// Run serves the CRI on a unix socket until ctx ends, then stops
// gracefully (in-flight RPCs get StopTimeout). Pods keep running.
func Run(ctx context.Context, o DaemonOptions) error {
	if err := os.MkdirAll(o.RunRoot, 0o700); err != nil {
		return err
	}
	lock, err := daemonLock(filepath.Join(o.RunRoot, "cri.lock"), "run root "+o.RunRoot)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if o.DataRoot != "" {
		dataLock, err := daemonLock(filepath.Join(o.DataRoot, "daemon.lock"), "data root "+o.DataRoot)
		if err != nil {
			return err
		}
		defer dataLock.Unlock()
	}

	s, err := New(ctx, o.Options)
	if err != nil {
		return err
	}
	ln, err := ListenUnix(o.Socket)
	if err != nil {
		s.Stop(0)
		return err
	}
	defer os.Remove(o.Socket)
	log := s.log
	log.Info("serving CRI", "socket", o.Socket, "streaming", s.StreamURL(), "metrics", s.MetricsURL(), "version", o.Version)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	select {
	case <-ctx.Done():
		log.Info("stopping; pods keep running", "timeout", o.StopTimeout)
		s.Stop(o.StopTimeout)
		<-served
		return nil
	case err := <-served:
		s.Stop(0)
		return fmt.Errorf("serving CRI: %w", err)
	}
}

// daemonLock takes a daemon lock file and writes this process's pid in
// it; when another process holds it, the error names that pid.
func daemonLock(path, what string) (*fsutil.Lock, error) {
	lock, err := fsutil.TryLockFile(path)
	if err != nil {
		return nil, err
	}
	if lock == nil {
		holder := "unknown pid"
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = "pid " + strconv.Itoa(pid)
			}
		}
		return nil, errdefs.FailedPrecondition("another runclet daemon (%s) serves %s (its lock %s is held)", holder, what, path)
	}
	// The pid is written through another descriptor: the lock is on the
	// open file description, which truncation does not touch.
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		lock.Unlock()
		return nil, err
	}
	return lock, nil
}

// ListenUnix listens on a unix socket at path with mode 0600 from its
// first instant (root only: kubelet runs as root). A socket
// left at path (by a daemon that crashed: the caller holds the daemon
// lock) is removed first; any other file there is an error. Paths too
// long for sun_path are bound through /proc/self/fd of their directory.
func ListenUnix(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, errdefs.InvalidArgument("socket path %q must be absolute", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, errdefs.AlreadyExists("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Bind in a private directory, set the mode there, then rename into
	// place: the socket is never reachable with a looser mode, and no
	// chmod ever goes through a path someone else could swap for a
	// symlink (rename replaces a link, it does not follow it).
	tmp, err := os.MkdirTemp(dir, ".runclet-sock-")
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "s")
	ln, err := unixsock.Listen(tmpSock) // Close does not unlink; Run removes the path
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(tmpSock, 0o600); err != nil { // in our 0700 dir
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmpSock, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}
