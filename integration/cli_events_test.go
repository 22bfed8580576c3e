package integration

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestCLIEvents: events -o json streams a pod's and its app's lifecycle
// as JSON lines, with the app's exit code, through to the removal.
func TestCLIEvents(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "events", "-o", "json", "--interval", "50ms")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(300 * time.Millisecond) // the first read is done: what follows is new
	_, _, err := pi.try("run", "--rm", "--name", "evt", img, "--", "sh", "-c", "sleep 0.5; exit 3")
	if exitCodeOf(t, err) != 3 {
		t.Fatalf("run: %v", err)
	}
	var got []string
	var podID string
	timeout := time.After(10 * time.Second)
	for !strings.Contains(strings.Join(got, ","), "pod removed") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("events ended; got %v", got)
			}
			var ev struct {
				Type, Action, Pod, PodName, App, AppName string
				ExitCode                                 *int
			}
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatalf("not a JSON line: %q", l)
			}
			if ev.PodName != "evt" && ev.Pod != podID {
				continue
			}
			podID = ev.Pod
			s := ev.Type + " " + ev.Action
			if ev.ExitCode != nil {
				s += " " + string(rune('0'+*ev.ExitCode))
			}
			got = append(got, s)
		case <-timeout:
			t.Fatalf("no pod removal seen; got %v", got)
		}
	}
	want := []string{"pod created", "pod ready", "app created", "app started", "app exited 3", "app removed", "pod removed"}
	for _, w := range want {
		if !strings.Contains(strings.Join(got, ",")+",", w+",") {
			t.Errorf("events lack %q: %v", w, got)
		}
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("events after ctrl-c: %v", err)
	}
}
