package pod

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// Layout is where pods live on disk. Everything a pod is lives under
// its directory in the data root; what must vanish at reboot (sockets,
// pinned namespaces, libcontainer state) lives under the run root.
//
//	<root>/pods.lock                               held while a pod is named and put in place
//	<root>/pods/.new-<pod>/                        a pod being put in place (see CreatePod)
//	<root>/pods/.del-<pod>/                        a pod being removed
//	<root>/pods/<pod>/pod.json
//	<root>/pods/<pod>/lock
//	<root>/pods/<pod>/etc/{resolv.conf,hosts,hostname}
//	<root>/pods/<pod>/stage1.log                   the supervisor's own log
//	<root>/pods/<pod>/apps/<app>/app.json
//	<root>/pods/<pod>/apps/<app>/exit.json        written by the supervisor
//	<root>/pods/<pod>/apps/<app>/bundle/{config.json,rootfs/}
//	<root>/pods/<pod>/apps/<app>/fs/{upper,work}  the overlay's writable layer
//	<root>/pods/<pod>/apps/<app>/app.log          CRI log when no log path was given
//	<run root>/pods/<pod>/{supervisor.sock,supervisor.pid}
//	<run root>/pods/<pod>/ns/{net,ipc,uts}        pinned namespaces
//	<run root>/runc/<app>/                        libcontainer state (runc --root)
type Layout struct {
	Root    string
	RunRoot string
}

func (l Layout) podsDir() string                { return filepath.Join(l.Root, "pods") }
func (l Layout) PodDir(id string) string        { return filepath.Join(l.Root, "pods", id) }
func (l Layout) stagingDir(id string) string    { return filepath.Join(l.Root, "pods", stagingPrefix+id) }
func (l Layout) namesLockFile() string          { return filepath.Join(l.Root, "pods.lock") }
func (l Layout) podFile(id string) string       { return filepath.Join(l.PodDir(id), "pod.json") }
func (l Layout) lockFile(id string) string      { return filepath.Join(l.PodDir(id), "lock") }
func (l Layout) EtcDir(id string) string        { return filepath.Join(l.PodDir(id), "etc") }
func (l Layout) AppDir(pod, app string) string  { return filepath.Join(l.PodDir(pod), "apps", app) }
func (l Layout) appFile(pod, app string) string { return filepath.Join(l.AppDir(pod, app), "app.json") }
func (l Layout) ExitFile(pod, app string) string {
	return filepath.Join(l.AppDir(pod, app), "exit.json")
}
func (l Layout) Bundle(pod, app string) string { return filepath.Join(l.AppDir(pod, app), "bundle") }
func (l Layout) RunDir(id string) string       { return filepath.Join(l.RunRoot, "pods", id) }
func (l Layout) StateRoot() string             { return filepath.Join(l.RunRoot, "runc") }

// stagingPrefix names a pod directory that is being put in place: it is
// renamed to the pod's ID once locked and recorded.
const stagingPrefix = ".new-"

// removingPrefix names a pod directory being removed: renamed out of
// sight, then deleted.
const removingPrefix = ".del-"

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, data, 0o600)
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// lock takes the pod's lock. Every change to a pod's records happens
// under it, so two runclet processes never interleave changes to a pod.
func (l Layout) lock(id string) (*fsutil.Lock, error) {
	if _, err := os.Stat(l.PodDir(id)); err != nil {
		return nil, errdefs.NotFound("pod %s not found", id)
	}
	return fsutil.LockFile(l.lockFile(id), false)
}

func (l Layout) savePod(p *Pod) error { return writeJSON(l.podFile(p.ID), p) }

// LoadPod reads a pod record.
func (l Layout) LoadPod(id string) (*Pod, error) {
	if id == "" || strings.ContainsAny(id, "/.") {
		return nil, errdefs.InvalidArgument("invalid pod id %q", id)
	}
	p := &Pod{}
	if err := readJSON(l.podFile(id), p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.NotFound("pod %s not found", id)
		}
		return nil, err
	}
	return p, nil
}

// ListPods reads every pod record. Pods whose record is unreadable (a
// crash before the first write) are skipped; GC removes them.
func (l Layout) ListPods() ([]*Pod, error) {
	ents, err := os.ReadDir(l.podsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Pod
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue // being put in place or removed (stagingPrefix, removingPrefix)
		}
		if p, err := l.LoadPod(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Pod) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (l Layout) saveApp(a *App) error { return writeJSON(l.appFile(a.PodID, a.ID), a) }

// LoadApp reads an app record and folds in the exit the supervisor
// recorded, if any: the exit file is the truth about an exit.
func (l Layout) LoadApp(podID, appID string) (*App, error) {
	a := &App{}
	if err := readJSON(l.appFile(podID, appID), a); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.NotFound("app %s not found in pod %s", appID, podID)
		}
		return nil, err
	}
	var es proto.ExitStatus
	if err := readJSON(l.ExitFile(podID, appID), &es); err == nil {
		applyExit(a, &es)
	}
	return a, nil
}

func applyExit(a *App, es *proto.ExitStatus) {
	a.State, a.ExitCode, a.Reason, a.Message = AppExited, es.ExitCode, es.Reason, es.Message
	a.FinishedAt, a.OOMKilled, a.Pid = es.ExitedAt, es.OOMKilled, 0
	if a.StartedAt.IsZero() {
		// The exit was recorded before stage0 saved the start (an app
		// that exits at once): the supervisor's record tells of it.
		a.StartedAt = es.StartedAt
	}
}

// ListApps reads every app of a pod, oldest first.
func (l Layout) ListApps(podID string) ([]*App, error) {
	ents, err := os.ReadDir(filepath.Join(l.PodDir(podID), "apps"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*App
	for _, e := range ents {
		if a, err := l.LoadApp(podID, e.Name()); err == nil {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b *App) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}
