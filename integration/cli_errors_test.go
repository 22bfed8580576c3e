package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/runclet/runclet/integration/testimage"
)

// TestCLIErrorsSayWhatIsWrong: each error a user met in the CLI trial
// (issue 20) names the user's own words (path, app, pod state, the
// 6-character minimum) instead of runclet's internals, and fails with 125.
func TestCLIErrorsSayWhatIsWrong(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	bad := func(want string, notWant []string, args ...string) {
		t.Helper()
		_, stderr, err := pi.try(args...)
		if code := exitCodeOf(t, err); code != 125 || !strings.Contains(stderr, want) {
			t.Errorf("runclet %v: exit %d, stderr %q; want 125 and %q", args, code, stderr, want)
		}
		for _, n := range notWant {
			if strings.Contains(stderr, n) {
				t.Errorf("runclet %v: stderr %q shows %q", args, stderr, n)
			}
		}
	}
	// A missing volume source, before any pod exists.
	missing := filepath.Join(t.TempDir(), "nonexistent", "path")
	bad("volume source "+missing+" does not exist", []string{"AddApp", "container init"}, "run", "-v", missing+":/data", img, "--", "true")
	var pods []podJSON
	json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods)
	if len(pods) != 0 {
		t.Errorf("a run with a missing volume source left pods: %+v", pods)
	}

	// An export to a directory that does not exist names the path given.
	dest := filepath.Join(t.TempDir(), "no-dir", "out.tar")
	bad("export to "+dest, []string{".runclet-export"}, "image", "export", img, dest)

	// Two apps of one name: CLI words, not the CRI's "attempt".
	podID := lastLine(pi.run("app", "sandbox", "--name", "dup"))
	pi.run("app", "add", "dup", img, "--name", "web", "--", "sleep", "300")
	bad(`already has an app named "web"`, []string{"attempt"}, "app", "add", "dup", img, "--name", "web", "--", "true")

	// logs of an app that is not there names it and the pod's apps.
	bad(`app "nope" not found in pod `+podID+" (its apps: web)", nil, "logs", "dup", "nope")

	// exec on a stopped pod says it is stopped, not a socket error.
	pi.run("app", "start", "dup", "web")
	pi.run("stop", "--timeout", "1s", "dup")
	bad("pod "+podID+" (dup) is stopped", []string{"dial", ".sock"}, "exec", "dup", "ls")

	// An image ID prefix of 5 characters says the minimum.
	var imgs []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(pi.run("image", "ls", "-o", "json")), &imgs); err != nil || len(imgs) == 0 {
		t.Fatalf("image ls: %v %+v", err, imgs)
	}
	short := strings.TrimPrefix(imgs[0].ID, "sha256:")[:5]
	bad("at least 6 characters", nil, "image", "rm", short)
	bad("at least 6 characters", nil, "image", "inspect", short)
}

// TestCLIExportHonoursUmask: an exported archive gets the mode the
// user's umask gives any new file, not 0600.
func TestCLIExportHonoursUmask(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	dir := t.TempDir()
	for _, c := range []struct {
		umask string
		mode  os.FileMode
	}{{"022", 0o644}, {"027", 0o640}} {
		out := filepath.Join(dir, "img-"+c.umask+".tar")
		sh := exec.Command("sh", "-c", `umask `+c.umask+` && exec "$@"`, "sh", runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "image", "export", img, out)
		if b, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("export: %v: %s", err, b)
		}
		st, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != c.mode {
			t.Errorf("umask %s: export written %v, want %v", c.umask, st.Mode().Perm(), c.mode)
		}
	}
}

// TestCLIPullProgressKeepsTheImageID: on a terminal, the progress lines
// are drawn and then the image ID, which no redraw overwrites (a redraw
// moves the cursor up), also when every layer already exists.
func TestCLIPullProgressKeepsTheImageID(t *testing.T) {
	pi := newPodInstance(t)
	ref := pi.busybox() // pulled once: its layers exist
	for _, pass := range []string{"layers exist", "again"} {
		term := newTerminal(t)
		cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "image", "pull", ref)
		term.start(cmd)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("pull: %v: %q", err, term.out.String())
		}
		term.waitFor("sha256:")
		time.Sleep(300 * time.Millisecond) // anything drawn after it arrives too
		shown := term.out.String()
		// What a terminal shows last: the ID line, after the last escape.
		tail := shown[strings.LastIndex(shown, "\x1b")+1:]
		if !strings.Contains(shown, "\x1b[") || !strings.Contains(tail, "sha256:") {
			t.Errorf("%s: the image ID is not drawn after the progress (a redraw comes after it): %q", pass, shown)
		}
	}
}

// TestCLIPullShowsTotal: a pull that downloads draws one total bar
// (bytes, rate) under the layer lines, and the image ID after it.
func TestCLIPullShowsTotal(t *testing.T) {
	pi := newPodInstance(t)
	img, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pi.reg.Push("test/fresh:latest", img); err != nil {
		t.Fatal(err)
	}
	term := newTerminal(t)
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "image", "pull", pi.reg.Host()+"/test/fresh:latest")
	term.start(cmd)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pull: %v: %q", err, term.out.String())
	}
	term.waitFor("sha256:")
	time.Sleep(300 * time.Millisecond)
	shown := term.out.String()
	last := shown[strings.LastIndex(shown, "total ["):]
	if !strings.Contains(last, "=]") || !strings.Contains(last, "B/s") {
		t.Errorf("the last total line is not a full bar with a rate: %q", last)
	}
	if tail := shown[strings.LastIndex(shown, "\x1b")+1:]; !strings.Contains(tail, "total [") || !strings.Contains(tail, "sha256:") {
		t.Errorf("the total line and then the ID should end the output: %q", tail)
	}
}
