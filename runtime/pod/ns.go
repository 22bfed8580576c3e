package pod

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// pinUTSIPC creates a new UTS namespace with the pod's hostname and (when
// ipc) a new IPC namespace, and pins each by bind-mounting it on a file:
// the pod's namespaces then outlive any process, so no pause process is
// needed. The work happens on a thread that is thrown away afterwards, so
// no other goroutine ever runs in the new namespaces.
func pinUTSIPC(utsPath, ipcPath, hostname string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		errc <- func() error {
			flags := unix.CLONE_NEWUTS
			if ipcPath != "" {
				flags |= unix.CLONE_NEWIPC
			}
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare uts/ipc: %w", err)
			}
			if err := unix.Sethostname([]byte(hostname)); err != nil {
				return fmt.Errorf("sethostname %q: %w", hostname, err)
			}
			if err := pinNS("/proc/thread-self/ns/uts", utsPath); err != nil {
				return err
			}
			if ipcPath != "" {
				if err := pinNS("/proc/thread-self/ns/ipc", ipcPath); err != nil {
					unpinNS(utsPath)
					return err
				}
			}
			return nil
		}()
	}()
	return <-errc
}

func pinNS(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("pin namespace: %w", err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		os.Remove(dst)
		return fmt.Errorf("pin namespace %s on %s: %w", src, dst, err)
	}
	return nil
}

// unpinNS releases a pinned namespace; a missing file is fine.
func unpinNS(path string) error {
	if path == "" {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	return nil
}
