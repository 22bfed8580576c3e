package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// addressFiles are host-local IPAM's allocations in the instance's data
// root: one file per address in use.
func (pi *podInstance) addressFiles() []string {
	var out []string
	filepath.Walk(filepath.Join(pi.root, "cni", "networks"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && strings.Count(filepath.Base(p), ".") == 3 {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	return out
}

// waitPodState polls `runclet status` until the pod is in state want.
func (pi *podInstance) waitPodState(podID, want string, within time.Duration) podJSON {
	pi.t.Helper()
	deadline := time.Now().Add(within)
	for {
		p := pi.status(podID)
		if p.State == want {
			return p
		}
		if time.Now().After(deadline) {
			pi.t.Fatalf("pod %s is %s after %v, want %s: %+v", podID, p.State, within, want, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// command runs runclet with the instance's roots and extra environment.
func (pi *podInstance) command(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(runcletBin, append([]string{"--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// A pod of `runclet run -d` exits when its app has: its supervisor is
// gone, its address released, its state "exited"; gc keeps it for the
// grace period and `gc --grace=0` removes it with nothing left. A pod of
// `app sandbox` stays ready when its apps have exited.
func TestRunPodExitsWithItsApp(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()

	id := lastLine(pi.run("run", "-d", img, "--", "sh", "-c", "sleep 1; echo bye; exit 3"))
	pidFile := filepath.Join(pi.runRoot, "pods", id, "supervisor.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	supervisor, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	running := pi.status(id)
	if running.State != "ready" || running.Attachment == nil || len(running.Attachment.IPs) == 0 || len(pi.addressFiles()) != 1 {
		t.Fatalf("running pod: %+v, addresses %v", running, pi.addressFiles())
	}
	t0 := time.Now()
	p := pi.waitPodState(id, "exited", 20*time.Second)
	t.Logf("pod exited %v after run -d returned (the app sleeps 1 s)", time.Since(t0).Round(time.Millisecond))
	if len(p.Apps) != 1 || p.Apps[0].State != "exited" || p.Apps[0].ExitCode != 3 {
		t.Fatalf("exited pod: %+v", p)
	}
	if err := syscall.Kill(supervisor, 0); err == nil {
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", supervisor)); strings.Contains(string(cmdline), id) {
			t.Fatalf("supervisor %d of the exited pod still runs", supervisor)
		}
	}
	if _, err := os.Stat(pidFile); err == nil {
		t.Errorf("%s left", pidFile)
	}
	if a := pi.addressFiles(); len(a) != 0 {
		t.Fatalf("the exited pod still holds addresses %v", a)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", pi.bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		t.Fatalf("the exited pod's veth is still there: %s", out)
	}
	if logs := pi.run("logs", id); logs != "bye\n" {
		t.Fatalf("logs of the exited pod: %q", logs)
	}

	// An `app sandbox` pod whose only app exited stays ready.
	sb := lastLine(pi.run("app", "sandbox", "--name", "kept"))
	app := lastLine(pi.run("app", "add", sb, img, "--", "true"))
	pi.run("app", "start", sb, app)
	pi.waitApp(sb, "busybox")
	time.Sleep(time.Second)
	if p := pi.status(sb); p.State != "ready" {
		t.Fatalf("an app sandbox pod whose apps exited is %s, want ready", p.State)
	}

	// gc keeps the exited pod within its grace, removes it with --grace=0.
	if out := pi.run("gc"); strings.Contains(out, "removed pod") {
		t.Fatalf("gc within the grace: %s", out)
	}
	if out := pi.run("gc", "--grace=0"); !strings.Contains(out, "removed pod "+id) || strings.Contains(out, sb) {
		t.Fatalf("gc --grace=0: %s", out)
	}
	for _, d := range []string{filepath.Join(pi.root, "pods", id), filepath.Join(pi.runRoot, "pods", id)} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s left after gc", d)
		}
	}
}

// Pod names are unique among existing pods, also when processes race to
// take one; an ambiguous reference lists its candidates.
func TestPodNamesAreUnique(t *testing.T) {
	pi := newPodInstance(t)
	first := lastLine(pi.run("app", "sandbox", "--name", "web"))
	_, stderr, err := pi.try("app", "sandbox", "--name", "web")
	if err == nil || !strings.Contains(stderr, `pod name "web" is taken by pod `+first) {
		t.Fatalf("a second pod named web: %v: %s", err, stderr)
	}

	// Four processes at once: exactly one gets the name.
	const n = 4
	var wg sync.WaitGroup
	results := make([]error, n)
	stderrs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, stderrs[i], results[i] = pi.try("app", "sandbox", "--name", "race")
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range results {
		if err == nil {
			ok++
		} else if !strings.Contains(stderrs[i], `pod name "race" is taken`) {
			t.Errorf("racer %d: %v: %s", i, err, stderrs[i])
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d racers got the name race", ok, n)
	}
	var pods []podJSON
	json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods)
	if len(pods) != 2 {
		t.Fatalf("%d pods, want 2: %+v", len(pods), pods)
	}

	// A name that is also another pod's ID prefix: ambiguous, and the
	// error names both.
	prefix := first[:8]
	second := lastLine(pi.run("app", "sandbox", "--name", prefix))
	_, stderr, err = pi.try("status", prefix)
	if err == nil || !strings.Contains(stderr, "ambiguous") || !strings.Contains(stderr, first) || !strings.Contains(stderr, second) {
		t.Fatalf("status of an ambiguous name: %v: %s", err, stderr)
	}
}

// A second daemon on the same data root, with a run root of its own,
// refuses to start and names the pid of the one that serves it.
func TestSecondDaemonOnADataRootFails(t *testing.T) {
	ci := newCRIInstance(t)
	ci.startDaemon()
	other := t.TempDir()
	cmd := exec.Command(runcletBin, "--config", ci.config, "--root", ci.root, "--run-root", filepath.Join(other, "run"),
		"daemon", "--listen", "unix://"+filepath.Join(other, "cri.sock"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		want := fmt.Sprintf("another runclet daemon (pid %d) serves data root %s", ci.daemon.Process.Pid, ci.root)
		if err == nil || !strings.Contains(out.String(), want) {
			t.Fatalf("second daemon: %v: %s (want %q)", err, out.String(), want)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("a second daemon on data root %s is serving: %s", ci.root, out.String())
	}
}

// The CLI leaves kubelet's pods alone: `rm` and `stop` refuse them
// without --force, `gc` does not collect them without --include-cri; and
// when forced, the daemon's view drops the pod within a second.
func TestCLILeavesCRIPodsAlone(t *testing.T) {
	ci := newCRIInstance(t)
	ci.startDaemon()
	ctx := ctxT(t)
	ref := ci.pushBusybox()
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	run := func(name string) (string, string) {
		cfg := ci.sandboxConfig(name)
		sb, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		c, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: containerConfig("done", ref, nil, "true")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			t.Fatal(err)
		}
		ci.waitState(ctx, c.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED)
		return sb.PodSandboxId, c.ContainerId
	}
	// Pods whose apps have all exited: what the resync skips.
	ready, readyCtr := run("ready")
	stopped, _ := run("stopped")
	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{{"rm", ready}, {"stop", ready}, {"rm", stopped}, {"app", "rm", ready, readyCtr}, {"app", "stop", ready, readyCtr}, {"app", "add", ready, ref}} {
		_, stderr, err := ci.try(args...)
		if err == nil || !strings.Contains(stderr, "belongs to the CRI") {
			t.Fatalf("runclet %v of a CRI pod: %v: %s", args, err, stderr)
		}
	}
	if out := ci.run("gc", "--grace=0"); strings.Contains(out, "removed pod") {
		t.Fatalf("gc collected a CRI pod: %s", out)
	}
	for _, id := range []string{ready, stopped} {
		if _, err := os.Stat(filepath.Join(ci.root, "pods", id)); err != nil {
			t.Fatalf("pod %s: %v", id, err)
		}
		st, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]runtimeapi.PodSandboxState{ready: runtimeapi.PodSandboxState_SANDBOX_READY, stopped: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}[id]; st.Status.State != want {
			t.Fatalf("pod %s is %s, want %s", id, st.Status.State, want)
		}
	}

	// Forced, the daemon's index drops them within a second.
	gone := func(id string, since time.Time) time.Duration {
		t.Helper()
		for {
			_, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
			if status.Code(err) == codes.NotFound {
				r, _ := ci.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
				for _, it := range r.GetItems() {
					if it.Id == id {
						t.Fatalf("pod %s still listed", id)
					}
				}
				return time.Since(since)
			}
			if time.Since(since) > time.Second {
				t.Fatalf("the daemon still has pod %s 1s after it was removed: %v", id, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	within := func(what string, done func() bool) {
		t.Helper()
		t0 := time.Now()
		for !done() {
			if time.Since(t0) > time.Second {
				t.Fatalf("%s: the daemon did not see it within 1s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%s: the daemon saw it after %v", what, time.Since(t0).Round(time.Millisecond))
	}
	ci.run("app", "rm", "--force", ready, readyCtr)
	within("app rm --force", func() bool {
		_, err := ci.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: readyCtr})
		return status.Code(err) == codes.NotFound
	})
	ci.run("stop", "--force", ready)
	within("stop --force", func() bool {
		st, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: ready})
		return err == nil && st.Status.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
	ci.run("rm", "--force", ready)
	t.Logf("rm --force: the daemon dropped the pod after %v", gone(ready, time.Now()).Round(time.Millisecond))
	out := ci.run("gc", "--grace=0", "--include-cri")
	if !strings.Contains(out, "removed pod "+stopped) {
		t.Fatalf("gc --include-cri: %s", out)
	}
	t.Logf("gc --include-cri: the daemon dropped the pod after %v", gone(stopped, time.Now()).Round(time.Millisecond))
}

// Nothing ever removes a pod while it is being made: a gc loop beside
// pod creations, a gc and a starting daemon while a creation is paused
// with its directory in place.
func TestPodCreationRacesGCAndDaemonStart(t *testing.T) {
	ci := newCRIInstance(t)
	pi := ci.podInstance
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var gcRuns int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			pi.command(nil, "gc", "--grace=0").Run()
			gcRuns++
		}
	}()
	stopGC := func() {
		cancel()
		wg.Wait()
	}
	defer stopGC()

	var made []string
	const n = 6
	for i := range n {
		out, err := pi.command(nil, "app", "sandbox", "--name", fmt.Sprintf("beside-gc-%d", i)).CombinedOutput()
		if err != nil {
			t.Errorf("creation %d beside a gc loop: %v: %s", i, err, out)
			continue
		}
		made = append(made, lastLine(string(out)))
	}
	// Paused with its directory in place: gc runs meanwhile (the loop).
	out, err := pi.command([]string{"RUNCLET_PAUSEPOINT=after-pod-dir"}, "app", "sandbox", "--name", "paused-beside-gc").CombinedOutput()
	if err != nil {
		t.Errorf("a paused creation beside a gc loop: %v: %s", err, out)
	} else {
		made = append(made, lastLine(string(out)))
	}
	stopGC()
	t.Logf("%d gc runs beside %d creations", gcRuns, n+1)

	// A daemon starting (its crash cleanup) while a creation is paused
	// (long enough for a daemon start on a busy machine).
	create := pi.command([]string{"RUNCLET_PAUSEPOINT=after-pod-dir:10s"}, "app", "sandbox", "--name", "paused-beside-daemon")
	var cout, cerr bytes.Buffer
	create.Stdout, create.Stderr = &cout, &cerr
	if err := create.Start(); err != nil {
		t.Fatal(err)
	}
	// Its directory appears under its ID (then it pauses).
	deadline := time.Now().Add(30 * time.Second)
	for len(dirsOf(filepath.Join(pi.root, "pods"), made...)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the paused creation made no pod directory")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t0 := time.Now()
	ci.startDaemon()
	t.Logf("the daemon started %v after the pod directory appeared", time.Since(t0).Round(time.Millisecond))
	if err := create.Wait(); err != nil {
		t.Errorf("a creation while a daemon started: %v: %s%s", err, cout.String(), cerr.String())
	} else {
		made = append(made, lastLine(cout.String()))
	}
	if strings.Contains(ci.out.String(), "removed a pod sandbox whose creation was interrupted") {
		t.Errorf("the starting daemon removed a pod being made")
	}
	if len(made) != n+2 {
		t.Fatalf("%d of %d creations succeeded", len(made), n+2)
	}
	for _, id := range made {
		if p := pi.status(id); p.State != "ready" {
			t.Errorf("pod %s is %s, want ready", id, p.State)
		}
	}
}
