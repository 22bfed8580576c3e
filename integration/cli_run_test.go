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
