package state

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/runclet/runclet/internal/errdefs"
)

// Every pair of states, allowed or not, against the table of life.
func TestTransitions(t *testing.T) {
	apps := []App{AppCreated, AppRunning, AppExited, AppUnknown}
	appAllowed := map[[2]App]bool{
		{AppCreated, AppRunning}: true, // StartApp
		{AppCreated, AppExited}:  true, // killed or failed before it started
		{AppCreated, AppUnknown}: true, // its supervisor died
		{AppRunning, AppExited}:  true,
		{AppRunning, AppUnknown}: true,
		{AppUnknown, AppExited}:  true, // the exit was recorded after all
	}
	for _, from := range apps {
		for _, to := range apps {
			want := appAllowed[[2]App{from, to}]
			if got := Can(from, to); got != want {
				t.Errorf("app %s → %s: %v, want %v", from, to, got, want)
			}
			err := Check("app x", from, to)
			if want != (err == nil) || err != nil && (!errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), fmt.Sprintf("app x is %s; it cannot become %s", from, to))) {
				t.Errorf("Check app %s → %s: %v", from, to, err)
			}
			if Forward(from, to) != (want || from == to) {
				t.Errorf("Forward app %s → %s", from, to)
			}
		}
	}
	pods := []Pod{PodPreparing, PodReady, PodStopped, PodExited}
	podAllowed := map[[2]Pod]bool{
		{PodPreparing, PodReady}:   true, // its supervisor serves
		{PodPreparing, PodStopped}: true, // removed half-made
		{PodReady, PodStopped}:     true,
		{PodReady, PodExited}:      true, // its apps have all exited (runclet run)
	}
	for _, from := range pods {
		for _, to := range pods {
			want := podAllowed[[2]Pod{from, to}]
			if got := Can(from, to); got != want {
				t.Errorf("pod %s → %s: %v, want %v", from, to, got, want)
			}
			if (Check("pod p", from, to) == nil) != want {
				t.Errorf("Check pod %s → %s", from, to)
			}
		}
	}
	// An unknown state becomes nothing and nothing becomes it.
	if Can(App("paused"), AppRunning) || Can(AppCreated, App("paused")) || Can(Pod(""), PodReady) {
		t.Error("a state outside the machine moves")
	}
	for _, s := range apps {
		if s.Live() != (s == AppCreated || s == AppRunning) {
			t.Errorf("%s live: %v", s, s.Live())
		}
	}
	for _, s := range pods {
		if s.Inactive() != (s == PodStopped || s == PodExited) {
			t.Errorf("%s inactive: %v", s, s.Inactive())
		}
	}
}
