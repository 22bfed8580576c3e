package cri

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watcher tells the daemon the moment an app's state files change: it
// watches each app's directory with inotify for the supervisor's exit.json
// (written by rename, so IN_MOVED_TO) and for app.json (rewritten by
// stage0, also by rename). It watches each pod's directory likewise for
// pod.json and for the directory's removal, so a pod stopped or removed
// by another process (`runclet rm --force`) is seen at once. One inotify
// instance serves every app and pod; a pod's key has no appID.
type watcher struct {
	f  *os.File
	fd int // f's descriptor; f.Fd() would make it blocking

	mu     sync.Mutex
	closed bool
	byWD   map[int32]appKey
	byApp  map[string]int32

	notify func(appKey)
	done   chan struct{}
}

// appKey names an app, or with no appID a pod.
type appKey struct{ podID, appID string }

// name is the key's name in byApp.
func (k appKey) name() string {
	if k.appID == "" {
		return podWatchName(k.podID)
	}
	return k.appID
}

// watchedFiles are the names in an app directory whose change is news.
var watchedFiles = map[string]bool{"exit.json": true, "app.json": true}

// newWatcher starts watching; notify runs on the watcher's goroutine, one
// call at a time. An inotify queue overflow notifies every watched app.
func newWatcher(notify func(appKey)) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	// A non-blocking fd in an os.File uses the runtime poller, so Close
	// wakes the reader.
	w := &watcher{
		f: os.NewFile(uintptr(fd), "inotify"), fd: fd, byWD: map[int32]appKey{}, byApp: map[string]int32{},
		notify: notify, done: make(chan struct{}),
	}
	go w.loop()
	return w, nil
}

// add watches an app's directory. Watching an app twice is harmless.
func (w *watcher) add(k appKey, dir string) error {
	return w.addKey(k.appID, k, dir)
}

// addPod watches a pod's directory. Watching a pod twice is harmless.
func (w *watcher) addPod(podID, dir string) error {
	return w.addKey(podWatchName(podID), appKey{podID: podID}, dir)
}

// removePod stops watching a pod's directory.
func (w *watcher) removePod(podID string) { w.remove(podWatchName(podID)) }

// podWatchName is a pod's name in byApp (app IDs are hex: no clash).
func podWatchName(podID string) string { return "pod/" + podID }

func (w *watcher) addKey(name string, k appKey, dir string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.byApp[name]; ok || w.closed {
		return nil
	}
	wd, err := unix.InotifyAddWatch(w.fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE|unix.IN_ONLYDIR)
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	w.byWD[int32(wd)] = k
	w.byApp[name] = int32(wd)
	return nil
}

// remove stops watching an app (its directory may already be gone).
func (w *watcher) remove(appID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wd, ok := w.byApp[appID]
	if !ok || w.closed {
		return
	}
	delete(w.byApp, appID)
	delete(w.byWD, wd)
	unix.InotifyRmWatch(w.fd, uint32(wd)) // EINVAL when the kernel already dropped it
}

func (w *watcher) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byApp)
}

// close stops the watcher and waits for its goroutine.
func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.f.Close()
	<-w.done
}

func (w *watcher) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				// The fd is unusable; exits are still seen by the resync.
				slog.Error("inotify watcher stopped", "err", err)
			}
			return
		}
		for _, k := range w.parse(buf[:n]) {
			w.notify(k)
		}
	}
}

// parse decodes a batch of events into the apps to refresh, each once.
func (w *watcher) parse(b []byte) []appKey {
	var out []appKey
	seen := map[string]bool{}
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(b) {
			break
		}
		name := string(bytes.TrimRight(b[unix.SizeofInotifyEvent:end], "\x00"))
		b = b[end:]
		switch {
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			for _, k := range w.byWD {
				if !seen[k.name()] {
					seen[k.name()] = true
					out = append(out, k)
				}
			}
		case ev.Mask&unix.IN_IGNORED != 0:
			// The directory went away (app or pod removed): forget the
			// watch, and tell (the removal may be another process's).
			if k, ok := w.byWD[ev.Wd]; ok {
				delete(w.byWD, ev.Wd)
				delete(w.byApp, k.name())
				if !seen[k.name()] {
					seen[k.name()] = true
					out = append(out, k)
				}
			}
		default:
			k, ok := w.byWD[ev.Wd]
			if ok && !seen[k.name()] && (k.appID == "" && name == "pod.json" || k.appID != "" && watchedFiles[name]) {
				seen[k.name()] = true
				out = append(out, k)
			}
		}
	}
	return out
}
