package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/runclet/runclet/runtime/pod"
)

// lifecycleEvent is one line of `runclet events`.
type lifecycleEvent struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`   // pod or app
	Action   string    `json:"action"` // created, ready, started, exited, stopped, removed
	Pod      string    `json:"pod"`
	PodName  string    `json:"podName,omitempty"`
	App      string    `json:"app,omitempty"`
	AppName  string    `json:"appName,omitempty"`
	ExitCode *int      `json:"exitCode,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

// seen is what events last saw of a pod or app.
type seen struct {
	state, name, podName string
	started              bool
}

func eventsCommand(g *globals) *cobra.Command {
	var out outputFlag
	var interval time.Duration
	var since time.Duration
	c := &cobra.Command{
		Use:   "events",
		Short: "Stream pod and app lifecycle events (created, ready, started, exited, stopped, removed)",
		Long: `Stream pod and app lifecycle events until interrupted: pods created,
ready, stopped, exited and removed; apps created, started, exited
(with the exit code and reason) and removed. Events come from the pod
records on disk, so every runclet (CLI and daemon) on this root is seen.
Times are those the records hold (when the pod or app was created,
started, finished), or the time the removal was seen. --since also
replays what the records show happened in that past window. -o json
prints one JSON object per line.`,
		Example: "  runclet events\n  runclet events -o json | jq -c 'select(.action == \"exited\")'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w := cmd.OutOrStdout()
			emit := func(evs []lifecycleEvent) error {
				sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
				for _, ev := range evs {
					if err := writeEvent(w, ev, asJSON); err != nil {
						return err
					}
				}
				return nil
			}
			state := map[string]*seen{}
			first := true
			from := time.Now().Add(-since)
			for {
				evs := pollEvents(m, state)
				if first {
					// Only what happened in the --since window.
					kept := evs[:0]
					for _, ev := range evs {
						if since > 0 && ev.Time.After(from) {
							kept = append(kept, ev)
						}
					}
					evs, first = kept, false
				}
				if err := emit(evs); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	out.add(c)
	c.Flags().DurationVar(&interval, "interval", 200*time.Millisecond, "how often the records are read")
	c.Flags().DurationVar(&since, "since", 0, "also show events of this past window, e.g. 10m")
	return c
}

func writeEvent(w io.Writer, ev lifecycleEvent, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(ev)
	}
	line := fmt.Sprintf("%s %s %s %s", ev.Time.Local().Format("2006-01-02T15:04:05.000Z07:00"), ev.Type, ev.Action, ev.Pod[:12])
	if ev.PodName != "" {
		line += " (" + ev.PodName + ")"
	}
	if ev.App != "" {
		line += fmt.Sprintf(" app %s (%s)", ev.App[:12], ev.AppName)
	}
	if ev.ExitCode != nil {
		line += fmt.Sprintf(" exit code %d", *ev.ExitCode)
	}
	if ev.Reason != "" {
		line += " " + ev.Reason
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// pollEvents reads every pod and app record and returns what changed
// since state, updating it. Steps missed between two reads (an app that
// was created, started and exited in between) are filled in from the
// record's timestamps.
func pollEvents(m *pod.Manager, state map[string]*seen) []lifecycleEvent {
	var evs []lifecycleEvent
	now := time.Now()
	present := map[string]bool{}
	pods, _ := m.ListPods()
	for _, p := range pods {
		present[p.ID] = true
		old := state[p.ID]
		if old == nil {
			old = &seen{state: "", name: p.Name}
			state[p.ID] = old
			evs = append(evs, lifecycleEvent{Time: p.CreatedAt, Type: "pod", Action: "created", Pod: p.ID, PodName: p.Name})
		}
		if string(p.State) != old.state {
			switch p.State {
			case pod.PodReady:
				evs = append(evs, lifecycleEvent{Time: later(p.CreatedAt, now, old.state != ""), Type: "pod", Action: "ready", Pod: p.ID, PodName: p.Name})
			case pod.PodStopped, pod.PodExited:
				evs = append(evs, lifecycleEvent{Time: orNow(p.FinishedAt, now), Type: "pod", Action: string(p.State), Pod: p.ID, PodName: p.Name})
			}
			old.state = string(p.State)
		}
		apps, _ := m.Layout().ListApps(p.ID)
		for _, a := range apps {
			present[a.ID] = true
			base := lifecycleEvent{Type: "app", Pod: p.ID, PodName: p.Name, App: a.ID, AppName: a.Name}
			oa := state[a.ID]
			if oa == nil {
				oa = &seen{name: a.Name, podName: p.ID}
				state[a.ID] = oa
				ev := base
				ev.Time, ev.Action = a.CreatedAt, "created"
				evs = append(evs, ev)
			}
			if !oa.started && !a.StartedAt.IsZero() {
				ev := base
				ev.Time, ev.Action = a.StartedAt, "started"
				evs = append(evs, ev)
				oa.started = true
			}
			if a.State == pod.AppExited && oa.state != string(pod.AppExited) {
				ev := base
				code := a.ExitCode
				ev.Time, ev.Action, ev.ExitCode, ev.Reason = orNow(a.FinishedAt, now), "exited", &code, a.Reason
				evs = append(evs, ev)
			}
			oa.state = string(a.State)
		}
	}
	// Removals: apps before their pods.
	var podsGone []lifecycleEvent
	for id, s := range state {
		if present[id] {
			continue
		}
		if s.podName != "" { // an app: podName holds its pod's ID
			evs = append(evs, lifecycleEvent{Time: now, Type: "app", Action: "removed", Pod: s.podName, App: id, AppName: s.name})
		} else {
			podsGone = append(podsGone, lifecycleEvent{Time: now, Type: "pod", Action: "removed", Pod: id, PodName: s.name})
		}
		delete(state, id)
	}
	return append(evs, podsGone...)
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}

// later is when a pod was seen ready: its creation time when it was
// ready when first seen, else now.
func later(created, now time.Time, sawBefore bool) time.Time {
	if sawBefore {
		return now
	}
	return created
}
