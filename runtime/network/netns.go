package network

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// A pod's network namespace is pinned by bind-mounting its nsfs file on a
// regular file under the run root: the namespace lives as long as that
// mount, with no process in it (no pause process). Apps join it through
// the path in their OCI spec.

// NewNetNS creates a new network namespace and pins it by bind-mounting it
// on path, which is created (it must not exist; its directory must). The
// namespace is made on a dedicated, locked OS thread that is thrown away
// afterwards, so no goroutine of the caller ever runs in it. On failure
// nothing is left behind.
func NewNetNS(path string) (retErr error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return errdefs.AlreadyExists("create network namespace %s: file exists", path)
		}
		return fmt.Errorf("create network namespace %s: %w", path, err)
	}
	f.Close()
	defer func() {
		if retErr != nil {
			os.Remove(path)
		}
	}()

	onThreadOfItsOwn(func() bool {
		// The thread's network namespace is changed for good: report it
		// unclean so that it is thrown away rather than reused.
		if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
			err = fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return false
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err = unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			err = fmt.Errorf("bind-mount %s: %w", src, err)
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("create network namespace %s: %w", path, err)
	}
	return nil
}

// RemoveNetNS unpins the namespace at path (a lazy MNT_DETACH unmount, so a
// process still inside keeps it alive until it exits) and removes the file.
// It is idempotent: a path that is no longer mounted, or is gone, is fine.
func RemoveNetNS(path string) error {
	// Unmount every layer in case the path was pinned more than once.
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		return fmt.Errorf("remove network namespace %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace %s: %w", path, err)
	}
	return nil
}

// isNetNSPath reports whether path is a namespace file (a pinned nsfs
// mount, or /proc/<pid>/ns/net) that setns can use.
func isNetNSPath(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC || st.Type == unix.PROC_SUPER_MAGIC
}

// WithNetNS runs fn on a fresh goroutine whose OS thread is switched into
// the network namespace at path, and waits for it. Afterwards the thread is
// switched back to its original namespace and released, or, if that fails,
// thrown away. Sockets fn creates stay in the namespace after it returns
// (a listener made inside may be served from anywhere). Goroutines that fn
// starts do not run in the namespace. A panic in fn is re-raised in the
// caller.
func WithNetNS(path string, fn func() error) error {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return errdefs.NotFound("network namespace %s: %w", path, os.ErrNotExist)
		}
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer unix.Close(target)

	var (
		fnErr    error
		panicked bool
		panicVal any
	)
	onThreadOfItsOwn(func() bool {
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fnErr = fmt.Errorf("open current network namespace: %w", err)
			return true
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			fnErr = fmt.Errorf("enter network namespace %s: %w", path, err)
			return true
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					panicked, panicVal = true, p
				}
			}()
			fnErr = fn()
		}()
		return unix.Setns(orig, unix.CLONE_NEWNET) == nil
	})
	if panicked {
		panic(panicVal)
	}
	return fnErr
}

// onThreadOfItsOwn runs fn on a new goroutine locked to an OS thread and
// waits for it. When fn returns true the thread is clean and released to
// the scheduler; when it returns false the thread stays locked and the
// runtime terminates it as the goroutine exits. The process's main thread
// is never used: Go does not terminate it but parks it forever, which would
// keep a namespace it was switched into alive. (While the outer goroutine
// holds the main thread locked, the inner one cannot be scheduled on it.)
func onThreadOfItsOwn(fn func() (clean bool)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			onThreadOfItsOwn(fn)
			runtime.UnlockOSThread()
			return
		}
		if fn() {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}
