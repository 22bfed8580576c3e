// Package state is the one state machine of pods and apps: their states,
// the transitions allowed between them, and the check every layer (the
// supervisor, stage0's records, the CLI and the CRI) makes before it moves
// one. It is a leaf: the supervisor uses it too.
package state

import (
	"slices"

	"github.com/runclet/runclet/internal/errdefs"
)

// App is where an app is in its life. The supervisor reports the first
// three; Unknown is stage0's for an app whose supervisor died before it
// recorded the app's exit.
type App string

// App states.
const (
	AppCreated App = "created" // its init waits for StartApp
	AppRunning App = "running"
	AppExited  App = "exited"
	AppUnknown App = "unknown"
)

// Pod is where a pod is in its life.
type Pod string

// Pod states. A pod is preparing from its first file until its supervisor
// serves; a crash leaves it there and GC removes it.
const (
	PodPreparing Pod = "preparing"
	PodReady     Pod = "ready"   // supervisor up, network attached
	PodStopped   Pod = "stopped" // apps killed, network detached, supervisor gone
	// PodExited is a pod made to exit with its apps (runclet run) whose
	// apps have all exited: as stopped.
	PodExited Pod = "exited"
)

// The transitions: each state and the states it may become. A state not
// listed becomes nothing.
var (
	appNext = map[App][]App{
		AppCreated: {AppRunning, AppExited, AppUnknown},
		AppRunning: {AppExited, AppUnknown},
		AppUnknown: {AppExited},
	}
	podNext = map[Pod][]Pod{
		PodPreparing: {PodReady, PodStopped}, // stopped: removed half-made
		PodReady:     {PodStopped, PodExited},
	}
)

// Can says whether from may become to.
func Can[S App | Pod](from, to S) bool {
	switch f := any(from).(type) {
	case App:
		return slices.Contains(appNext[f], any(to).(App))
	case Pod:
		return slices.Contains(podNext[f], any(to).(Pod))
	}
	return false
}

// Check is Can as an error: FailedPrecondition naming what (an app's or
// pod's name) and both states when from may not become to.
func Check[S App | Pod](what string, from, to S) error {
	if Can(from, to) {
		return nil
	}
	return errdefs.FailedPrecondition("%s is %s; it cannot become %s", what, from, to)
}

// Forward says whether a record in state to may replace one in state
// from: the same state (a newer reading) or a transition. A cache fed
// from several sources keeps it from moving backwards.
func Forward[S App | Pod](from, to S) bool { return from == to || Can(from, to) }

// Live says whether an app's processes may run: created or running.
func (s App) Live() bool { return s == AppCreated || s == AppRunning }

// Inactive says whether a pod no longer runs: stopped or exited.
func (s Pod) Inactive() bool { return s == PodStopped || s == PodExited }
