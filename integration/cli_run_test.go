package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestCLIReadOnlyKeepsTmpWritable: --read-only leaves /tmp, /var/tmp and
// /run writable (tmpfs) unless --read-only-tmpfs=false; --tmpfs mounts
// one with the options given.
func TestCLIReadOnlyKeepsTmpWritable(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	out := pi.run("run", "--rm", "--read-only", img, "--", "sh", "-c",
		"touch /tmp/a /var/tmp/b /run/c && if touch /etc/x 2>/dev/null; then echo rootfs-writable; else echo ok; fi")
	if out != "ok\n" {
		t.Errorf("--read-only: %q", out)
	}
	_, _, err := pi.try("run", "--rm", "--read-only", "--read-only-tmpfs=false", img, "--", "touch", "/tmp/a")
	if code := exitCodeOf(t, err); code != 1 {
		t.Errorf("--read-only --read-only-tmpfs=false: touch /tmp exit %d, want 1 (read-only)", code)
	}
	out = pi.run("run", "--rm", "--tmpfs", "/cache:size=1m,mode=0700", img, "--", "sh", "-c", "grep ' /cache ' /proc/mounts; stat -c %a /cache")
	if !strings.Contains(out, "tmpfs /cache tmpfs") || !strings.Contains(out, "size=1024k") || !strings.HasSuffix(out, "\n700\n") {
		t.Errorf("--tmpfs: %q", out)
	}
}

// TestCLIHostNetRefusesPorts: --net host with -p fails before a pod is
// made, instead of ignoring the ports.
func TestCLIHostNetRefusesPorts(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	_, stderr, err := pi.try("run", "-d", "--net", "host", "-p", "18090:80", img, "--", "sleep", "300")
	if code := exitCodeOf(t, err); code != 125 || !strings.Contains(stderr, "--net host with --port 18090:80") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var pods []podJSON
	json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods)
	if len(pods) != 0 {
		t.Fatalf("pods made: %+v", pods)
	}
}

// TestCLIRmStopsWithGrace: rm of a running pod whose app ignores SIGTERM
// waits the grace period (--time) before killing it; --force kills at once.
func TestCLIRmStopsWithGrace(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	ignoring := []string{"--", "sh", "-c", `trap "" TERM; while true; do sleep 1; done`}
	a := lastLine(pi.run(append([]string{"run", "-d", img}, ignoring...)...))
	b := lastLine(pi.run(append([]string{"run", "-d", img}, ignoring...)...))
	time.Sleep(300 * time.Millisecond) // the trap is set
	start := time.Now()
	if out := pi.run("rm", "-t", "2", a); !strings.Contains(out, a) {
		t.Fatalf("rm: %q", out)
	}
	if took := time.Since(start); took < 2*time.Second || took > 8*time.Second {
		t.Errorf("rm -t 2 took %v, want the 2 s grace period", took)
	}
	start = time.Now()
	pi.run("rm", "--force", b)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("rm --force took %v, want no grace period", took)
	}
	if out := pi.run("list", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("pods left: %q", out)
	}
}

// TestCLIListHidesIPOfStoppedPods: a stopped pod's address went back to
// the pool, so list and status do not show it.
func TestCLIListHidesIPOfStoppedPods(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	id := lastLine(pi.run("run", "-d", "--name", "ipcheck", img, "--", "sleep", "300"))
	ip, _, _ := strings.Cut(pi.status(id).Attachment.IPs[0], "/")
	if out := pi.run("list"); !strings.Contains(out, ip) {
		t.Fatalf("running pod's IP %s not listed: %q", ip, out)
	}
	pi.run("stop", "-t", "0", id)
	if out := pi.run("list"); strings.Contains(out, ip) {
		t.Errorf("stopped pod's IP %s listed: %q", ip, out)
	}
	if out := pi.run("status", id); strings.Contains(out, ip) {
		t.Errorf("stopped pod's IP %s in status: %q", ip, out)
	}
}

// TestCLIRunInit: with --init the app's orphans are reaped (without it a
// pid 1 that never waits collects zombies), signals reach the app (so a
// stop needs no grace period for an app that ignores SIGTERM as pid 1),
// and the app's exit code comes back.
func TestCLIRunInit(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	// The orphan "sleep 0.2" is reparented to pid 1, which (sleep) never waits.
	orphaning := []string{"--", "sh", "-c", "(sleep 0.2 &); exec sleep 300"}
	zombies := func(podID string) string {
		t.Helper()
		time.Sleep(1 * time.Second)
		return pi.run("exec", podID, "sh", "-c", "ps -o stat,comm | grep '^Z' || true")
	}
	without := lastLine(pi.run(append([]string{"run", "-d", img}, orphaning...)...))
	if z := zombies(without); !strings.Contains(z, "sleep") {
		t.Fatalf("without --init no zombie appeared (the test proves nothing): %q", z)
	}
	with := lastLine(pi.run(append([]string{"run", "-d", "--init", img}, orphaning...)...))
	if z := zombies(with); z != "" {
		t.Errorf("with --init zombies remain: %q", z)
	}
	if out := pi.run("exec", with, "cat", "/proc/1/cmdline"); !strings.HasPrefix(out, "/dev/init\x00--\x00sh\x00") {
		t.Errorf("pid 1 with --init: %q", out)
	}
	// SIGTERM reaches sleep through init: stop is prompt.
	start := time.Now()
	pi.run("stop", "-t", "10", with)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stop of an --init pod took %v: SIGTERM was not forwarded", took)
	}
	_, _, err := pi.try("run", "--rm", "--init", img, "--", "sh", "-c", "exit 5")
	if code := exitCodeOf(t, err); code != 5 {
		t.Errorf("--init exit code %d, want 5", code)
	}
	// The image's own command, when none is given.
	if out := pi.run("run", "--rm", "--init", "--entrypoint", "echo", img, "--", "via", "init"); out != "via init\n" {
		t.Errorf("--init --entrypoint: %q", out)
	}
	pi.run("rm", "--force", without)
}
