package container

import (
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oomWatch keeps the oom_kill count of a cgroup v2 memory.events file
// while the app runs. With the systemd cgroup driver systemd stops the
// app's scope, and removes its cgroup and the counter with it, as soon as
// the last process exits: a read after the exit (what OOMKilled did) found
// no file, and an OOM-killed app was reported as "Error" (found by the
// vmtest guest). The kernel tells inotify watchers of memory.events about
// every change, so the watch reads the counter at the kill, while the
// cgroup is still there.
type oomWatch struct {
	f     *os.File
	kills atomic.Int64
}

// watchOOM starts watching file; nil if it cannot (no such file: cgroup v1,
// or no memory controller).
func watchOOM(file string) *oomWatch {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, file, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil
	}
	w := &oomWatch{f: os.NewFile(uintptr(fd), "inotify:"+file)}
	w.kills.Store(int64(oomKills(file)))
	go w.loop(file)
	return w
}

// loop reads the counter after every change until the file goes (the
// kernel then ends the watch with IN_IGNORED) or close.
func (w *oomWatch) loop(file string) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		if v := int64(oomKills(file)); v > w.kills.Load() {
			w.kills.Store(v)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if ev.Mask&unix.IN_IGNORED != 0 {
				w.f.Close()
				return
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// count is the highest oom_kill value seen.
func (w *oomWatch) count() int64 {
	if w == nil {
		return 0
	}
	return w.kills.Load()
}

func (w *oomWatch) close() {
	if w != nil {
		w.f.Close()
	}
}
