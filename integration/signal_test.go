package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPullInterruptedCleansUp: SIGINT in the middle of `image pull`
// (a throttled registry keeps it there) cancels the pull, whose own
// cleanup removes the partial blobs in ingest/ and the half-unpacked
// layers in layers/tmp/; runclet says why and exits non-zero. Before,
// the signal killed runclet and left both for a later gc.
func TestPullInterruptedCleansUp(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	in := newInstance(t, "")
	reg := testregistry.StartTB(t)
	big, err := testimage.Random(3, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push("test/big:1", big); err != nil {
		t.Fatal(err)
	}
	reg.Throttle(256 << 10) // 256 KiB/s per blob: 8 MiB layers take 30 s
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(runcletBin, "--config", in.config, "--root", in.root, "--run-root", in.runRoot, "image", "pull", "-q", reg.Ref("test/big:1"))
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			tmp, ingest := filepath.Join(in.root, "images", "layers", "tmp"), filepath.Join(in.root, "images", "ingest")
			waitFor(t, "the pull to be writing layers", 60*time.Second, func() bool {
				a, _ := dirEntries(tmp)
				b, _ := dirEntries(ingest)
				return len(a) > 0 && len(b) > 0
			})
			time.Sleep(300 * time.Millisecond)
			sent := time.Now()
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			took := time.Since(sent)
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 || ee.ExitCode() == -1 {
				t.Fatalf("interrupted pull: %v (want a non-zero exit of its own, not death by signal); stderr %q", err, stderr.String())
			}
			if want := "interrupted by " + map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[sig]; !strings.Contains(stderr.String(), want) {
				t.Fatalf("stderr %q does not say %q", stderr.String(), want)
			}
			if took > 10*time.Second {
				t.Fatalf("pull took %v to stop after the signal", took)
			}
			for _, d := range []string{tmp, ingest} {
				if left, err := dirEntries(d); err != nil || len(left) != 0 {
					t.Fatalf("left in %s after the interrupted pull: %v %v", d, left, err)
				}
			}
			if ids := imageIDs(in); strings.TrimSpace(ids) != "" {
				t.Fatalf("image recorded after an interrupted pull: %q", ids)
			}
		})
	}
}

// TestRunForegroundCtrlC: the first SIGINT of a foreground `runclet run`
// says it stops the pod and sends the stop signal; the second kills the
// app at once (before, the first was silent and the second ignored: an
// app that ignores SIGTERM held runclet for the whole 10 s stop timeout).
func TestRunForegroundCtrlC(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	start := func(name, script string) (*exec.Cmd, *syncBuffer) {
		t.Helper()
		cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot,
			"run", "--rm", "--name", name, img, "--", "sh", "-c", script)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr := &syncBuffer{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready <- true
				}
			}
		}()
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("app never printed ready; stderr %q", stderr.String())
		}
		return cmd, stderr
	}
	wait := func(cmd *exec.Cmd, within time.Duration) (int, time.Duration) {
		t.Helper()
		t0 := time.Now()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), time.Since(t0)
			}
			if err != nil {
				t.Fatal(err)
			}
			return 0, time.Since(t0)
		case <-time.After(within):
			cmd.Process.Kill()
			<-done
			t.Fatalf("runclet run did not exit within %v", within)
		}
		return -1, 0
	}

	t.Run("one ctrl-c stops", func(t *testing.T) {
		cmd, stderr := start("fgstop", `trap "exit 3" TERM; echo ready; while :; do sleep 0.1; done`)
		cmd.Process.Signal(syscall.SIGINT)
		code, _ := wait(cmd, 30*time.Second)
		if code != 3 {
			t.Fatalf("exit code %d, want the app's 3; stderr %q", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "stopping pod ") || !strings.Contains(stderr.String(), "(ctrl-c again to kill)") {
			t.Fatalf("stderr %q does not say the pod is stopping", stderr.String())
		}
	})

	t.Run("second ctrl-c kills", func(t *testing.T) {
		cmd, stderr := start("fgkill", `trap "" TERM; echo ready; while :; do sleep 0.1; done`)
		first := time.Now()
		cmd.Process.Signal(syscall.SIGINT)
		waitFor(t, "the stopping message", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "ctrl-c again to kill") })
		time.Sleep(time.Second)
		if cmd.ProcessState != nil {
			t.Fatal("runclet exited although the app ignores its stop signal")
		}
		cmd.Process.Signal(syscall.SIGINT)
		code, _ := wait(cmd, 30*time.Second)
		// The stop timeout is 10 s: only the kill ends it sooner.
		if took := time.Since(first); took >= 9*time.Second {
			t.Fatalf("second ctrl-c did not kill: runclet ran %v after the first", took)
		}
		if code != 137 || !strings.Contains(stderr.String(), "killing pod") {
			t.Fatalf("exit code %d (want 137, SIGKILL), stderr %q", code, stderr.String())
		}
	})
	if _, err := os.Stat(pi.root); err != nil {
		t.Fatal(err)
	}
}
