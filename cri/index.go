package cri

import (
	"maps"
	"slices"
	"strings"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/state"
	"github.com/runclet/runclet/runtime/pod"
)

// index is the daemon's in-memory view of its pods and containers, so the
// calls kubelet makes every second (List*, *Status) never touch the disk.
// The disk stays the truth: the index is built from it at start, updated
// after each mutation from what the runtime returned, and refreshed when
// inotify reports an app's exit.json or app.json, or a pod's pod.json,
// changed, or an app's or pod's directory went away (another process,
// the CLI forced, removed it).
//
// Entries are immutable once stored: an update stores a new value, so a
// reader holding an entry sees a consistent snapshot without locking.
//
// States only move forward (created → running → unknown → exited for
// apps, preparing → ready → stopped for pods), so a refresh that read the
// disk before a concurrent mutation cannot roll the index back; and only
// handlers add entries (a refresh only deletes those whose records are
// gone from disk), so a late refresh cannot resurrect a removed pod or
// container.
type index struct {
	mu   sync.RWMutex
	pods map[string]*sandboxEntry
	ctrs map[string]*containerEntry
	// events, if set, hears of every change (see events.go).
	events *eventBroker
}

// sandboxEntry is one pod and its containers' IDs.
type sandboxEntry struct {
	pod  *pod.Pod
	apps []string // container IDs, in creation order
}

// containerEntry is one app and what the CRI shows of it that the app
// record does not hold.
type containerEntry struct {
	app *pod.App
	// imageName is ContainerStatus.image.image: the image's first tag,
	// else what was asked for.
	imageName string
	// user is the identity the app started with, nil if unknown.
	user *runtimeapi.LinuxContainerUser
	// resources are the app's cgroup limits as its bundle says (updated
	// by UpdateContainerResources), nil if unknown.
	resources *runtimeapi.LinuxContainerResources
}

func newIndex() *index {
	return &index{pods: map[string]*sandboxEntry{}, ctrs: map[string]*containerEntry{}}
}

// addPod stores a new pod (or replaces one).
func (x *index) addPod(p *pod.Pod) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := &sandboxEntry{pod: p}
	old, known := x.pods[p.ID]
	if known {
		e.apps = old.apps
	}
	x.pods[p.ID] = e
	if !known {
		x.emit(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, p.ID, p.ID)
		x.emit(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, p.ID, p.ID)
	}
}

// updatePod replaces a known pod's record unless that would move its
// state backwards. It reports whether the pod is known.
func (x *index) updatePod(p *pod.Pod) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	old, ok := x.pods[p.ID]
	if !ok {
		return false
	}
	if state.Forward(old.pod.State, p.State) {
		if p.State == old.pod.State && p.Broken == "" && old.pod.Broken != "" {
			// Broken is forward-only too: a refresh that read the disk
			// before the supervisor or holder died must not undo it.
			cp := *p
			cp.Broken = old.pod.Broken
			p = &cp
		}
		x.pods[p.ID] = &sandboxEntry{pod: p, apps: old.apps}
		if p.State == pod.PodStopped && old.pod.State != pod.PodStopped {
			x.emit(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, p.ID, p.ID)
		}
	}
	return true
}

// removePod forgets a pod and its containers and returns their IDs.
func (x *index) removePod(id string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.pods[id]
	if !ok {
		return nil
	}
	for i, c := range e.apps {
		delete(x.ctrs, c)
		x.pods[id] = &sandboxEntry{pod: e.pod, apps: e.apps[i+1:]}
		x.emit(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, c, id)
	}
	x.emit(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, id, id)
	delete(x.pods, id)
	return e.apps
}

// addContainer stores a new container of a known pod.
func (x *index) addContainer(c *containerEntry) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, ok := x.pods[c.app.PodID]
	if !ok {
		return false
	}
	_, dup := x.ctrs[c.app.ID]
	if !dup {
		x.pods[c.app.PodID] = &sandboxEntry{pod: p.pod, apps: append(slices.Clip(p.apps), c.app.ID)}
	}
	x.ctrs[c.app.ID] = c
	if !dup {
		x.emit(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, c.app.ID, c.app.PodID)
	}
	return true
}

// updateApp replaces a known container's app record unless that would
// move its state backwards. It reports whether the container is known.
func (x *index) updateApp(a *pod.App) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	old, ok := x.ctrs[a.ID]
	if !ok {
		return false
	}
	if state.Forward(old.app.State, a.State) {
		c := *old
		c.app = a
		x.ctrs[a.ID] = &c
		x.emitTransition(old.app, a)
	}
	return true
}

// updateResources records a container's new limits.
func (x *index) updateResources(id string, r *runtimeapi.LinuxContainerResources) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.ctrs[id]; ok {
		c := *old
		c.resources = r
		x.ctrs[id] = &c
	}
}

// emitTransition publishes the events an app's move from old to a
// means: started, stopped (both when the exit is the first news of a
// start). Moving to unknown (its supervisor died) is no event: kubelet's
// relist sees it. The caller holds x.mu.
func (x *index) emitTransition(old, a *pod.App) {
	if old.State == a.State {
		return
	}
	if old.State == pod.AppCreated && (a.State == pod.AppRunning || a.State == pod.AppExited && !a.StartedAt.IsZero()) {
		x.emit(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, a.ID, a.PodID)
	}
	if a.State == pod.AppExited {
		x.emit(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, a.ID, a.PodID)
	}
}

// removeContainer forgets a container.
func (x *index) removeContainer(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c, ok := x.ctrs[id]
	if !ok {
		return
	}
	delete(x.ctrs, id)
	if p, ok := x.pods[c.app.PodID]; ok {
		apps := slices.DeleteFunc(slices.Clone(p.apps), func(s string) bool { return s == id })
		x.pods[c.app.PodID] = &sandboxEntry{pod: p.pod, apps: apps}
	}
	x.emit(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, id, c.app.PodID)
}

// resolve finds the one key of m equal to id or, failing that, starting
// with it (crictl passes ID prefixes, as it does to containerd).
func resolve[V any](m map[string]V, what, id string) (V, error) {
	if v, ok := m[id]; ok {
		return v, nil
	}
	var found V
	n := 0
	for k, v := range m {
		if strings.HasPrefix(k, id) {
			found, n = v, n+1
		}
	}
	switch n {
	case 0:
		var zero V
		return zero, errdefs.NotFound("%s %q not found", what, id)
	case 1:
		return found, nil
	}
	var zero V
	return zero, errdefs.InvalidArgument("%s ID prefix %q is ambiguous", what, id)
}

// sandbox returns a pod by ID or unique ID prefix, with its containers.
func (x *index) sandbox(id string) (*pod.Pod, []*containerEntry, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, err := resolve(x.pods, "pod sandbox", id)
	if err != nil {
		return nil, nil, err
	}
	return e.pod, x.containersOf(e), nil
}

func (x *index) containersOf(e *sandboxEntry) []*containerEntry {
	out := make([]*containerEntry, 0, len(e.apps))
	for _, id := range e.apps {
		if c, ok := x.ctrs[id]; ok {
			out = append(out, c)
		}
	}
	return out
}

// container returns a container by ID or unique ID prefix.
func (x *index) container(id string) (*containerEntry, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return resolve(x.ctrs, "container", id)
}

// sandboxes lists every pod with its containers, oldest first.
func (x *index) sandboxes() []sandboxView {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]sandboxView, 0, len(x.pods))
	for _, e := range x.pods {
		out = append(out, sandboxView{pod: e.pod, containers: x.containersOf(e)})
	}
	slices.SortFunc(out, func(a, b sandboxView) int {
		if c := a.pod.CreatedAt.Compare(b.pod.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.pod.ID, b.pod.ID)
	})
	return out
}

// containers lists every container, oldest first.
func (x *index) containers() []*containerEntry {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := slices.Collect(maps.Values(x.ctrs))
	slices.SortFunc(out, func(a, b *containerEntry) int {
		if c := a.app.CreatedAt.Compare(b.app.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.app.ID, b.app.ID)
	})
	return out
}

// sandboxView is a pod with its containers.
type sandboxView struct {
	pod        *pod.Pod
	containers []*containerEntry
}

// live reports the pods that have apps not yet exited (what the resync
// re-reads).
func (x *index) live() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for id, e := range x.pods {
		if e.pod.State != pod.PodReady {
			continue
		}
		for _, c := range e.apps {
			if ce, ok := x.ctrs[c]; ok && ce.app.State != pod.AppExited {
				out = append(out, id)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}
