package pod

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/stage1-runc/proto"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGQUIT": syscall.SIGQUIT, "quit": syscall.SIGQUIT, "9": syscall.SIGKILL} {
		got, err := parseSignal(in)
		if err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	if _, err := parseSignal("SIGNOPE"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("unknown signal: %v", err)
	}
}

func TestExitFileIsTheTruth(t *testing.T) {
	l := Layout{Root: t.TempDir(), RunRoot: t.TempDir()}
	a := &App{ID: "a1", PodID: "p1", Name: "web", State: AppRunning, CreatedAt: time.Now()}
	if err := os.MkdirAll(l.AppDir("p1", "a1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := l.saveApp(a); err != nil {
		t.Fatal(err)
	}
	got, err := l.LoadApp("p1", "a1")
	if err != nil || got.State != AppRunning {
		t.Fatalf("before exit: %+v %v", got, err)
	}
	writeJSON(l.ExitFile("p1", "a1"), proto.ExitStatus{ExitCode: 137, Signal: 9, OOMKilled: true, Reason: "OOMKilled", ExitedAt: time.Now()})
	got, _ = l.LoadApp("p1", "a1")
	if got.State != AppExited || got.ExitCode != 137 || !got.OOMKilled || got.Reason != "OOMKilled" {
		t.Fatalf("after exit: %+v", got)
	}
	if _, err := l.LoadApp("p1", "nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("missing app: %v", err)
	}
	if _, err := l.LoadPod("../etc"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("pod id with a path in it: %v", err)
	}
}

// An app that exits at once can have its exit recorded before stage0
// saved its start: the record on disk still says created. The exit
// record's start time makes it a started app (the CRI sends
// CONTAINER_STARTED_EVENT for it, then STOPPED); an app never started
// stays without one.
func TestExitBeforeSavedStartKeepsTheStart(t *testing.T) {
	l := Layout{Root: t.TempDir(), RunRoot: t.TempDir()}
	started := time.Now().Add(-time.Millisecond).UTC()
	for _, c := range []struct {
		id      string
		started time.Time
	}{{"quick", started}, {"never", time.Time{}}} {
		if err := os.MkdirAll(l.AppDir("p1", c.id), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := l.saveApp(&App{ID: c.id, PodID: "p1", Name: c.id, State: AppCreated}); err != nil {
			t.Fatal(err)
		}
		writeJSON(l.ExitFile("p1", c.id), proto.ExitStatus{ExitCode: 3, Reason: "Error", ExitedAt: time.Now(), StartedAt: c.started})
		got, err := l.LoadApp("p1", c.id)
		if err != nil || got.State != AppExited || !got.StartedAt.Equal(c.started) {
			t.Fatalf("%s: %+v %v; want exited, started at %v", c.id, got, err, c.started)
		}
	}
}
