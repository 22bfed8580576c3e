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

	// --since replays what the records show for a past window, in text.
	id := lastLine(pi.run("run", "-d", "--name", "past", img, "--", "sleep", "300"))
	replay := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "events", "--since", "1m")
	out, _ := replay.StdoutPipe()
	if err := replay.Start(); err != nil {
		t.Fatal(err)
	}
	defer replay.Process.Kill()
	stopper := time.AfterFunc(10*time.Second, func() { replay.Process.Kill() }) // ends the scan below if the line never comes
	defer stopper.Stop()
	sc := bufio.NewScanner(out)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "app started "+id[:12]) {
			break
		}
	}
	text := strings.Join(seen, "\n")
	if !strings.Contains(text, "pod created "+id[:12]+" (past)") || !strings.Contains(text, "app started "+id[:12]+" (past) app ") {
		t.Errorf("events --since 1m:\n%s", text)
	}
	replay.Process.Signal(os.Interrupt)
	replay.Wait()
}
