package leakcheck

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PodWatcher records the name of every pod directory made under a data
// root while it runs (inotify, so a pod that lives for a millisecond is
// seen too): the IDs of the pods one runclet instance made, however many
// other instances share the host.
type PodWatcher struct {
	fd       int
	ids      map[string]bool
	overflow bool
}

// WatchPods starts watching root/pods, creating it (0700) if missing.
func WatchPods(root string) (*PodWatcher, error) {
	dir := filepath.Join(root, "pods")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Events queue in the kernel (16384 by default) and are read when the
	// IDs are asked for, so nothing is missed and nothing races.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &PodWatcher{fd: fd, ids: map[string]bool{}}
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		w.ids[e.Name()] = true
	}
	return w, nil
}

func (w *PodWatcher) drain() {
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			return // EAGAIN: nothing more queued
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.overflow = true
			}
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if len(name) > 0 && ev.Mask&unix.IN_ISDIR != 0 {
				w.ids[string(name)] = true
			}
		}
	}
}

// IDs returns, sorted, every pod directory name seen so far, and whether
// the kernel dropped events (then the list may be incomplete).
func (w *PodWatcher) IDs() ([]string, bool) {
	w.drain()
	out := make([]string, 0, len(w.ids))
	for id := range w.ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, w.overflow
}

// Close stops watching.
func (w *PodWatcher) Close() { unix.Close(w.fd) }
