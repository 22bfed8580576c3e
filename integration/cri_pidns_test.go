package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/hostcgroup"
)

// sharedPidPod runs a pod whose apps share a pid namespace, with a
// CAP_SYS_PTRACE app "debug" (what `kubectl debug --profile=general`
// gives) and an app "app", both sleeping.
func (ci *criInstance) sharedPidPod(ctx context.Context, name, img string, userns bool) (podID, debug, app string) {
	t := ci.t
	t.Helper()
	sb := ci.sandboxConfig(name)
	ns := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}
	if userns {
		mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 400000, Length: 65536}}
		ns.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
	}
	sb.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns}
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
	if err != nil {
		t.Fatal(err)
	}
	podID = run.PodSandboxId
	start := func(cname string, caps []string) string {
		cc := containerConfig(cname, img, nil, "sleep", "600")
		cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: ns, Capabilities: &runtimeapi.Capability{AddCapabilities: caps},
		}}
		cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sb})
		if err != nil {
			t.Fatalf("create %s: %v", cname, err)
		}
		if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatalf("start %s: %v", cname, err)
		}
		return cr.ContainerId
	}
	return podID, start("debug", []string{"SYS_PTRACE"}), start("app", nil)
}

func (ci *criInstance) execIn(ctx context.Context, ctr string, script string) (string, int) {
	ci.t.Helper()
	r, err := ci.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"sh", "-c", script}, Timeout: 20})
	if err != nil {
		ci.t.Fatalf("exec %q: %v", script, err)
	}
	return string(r.Stdout) + string(r.Stderr), int(r.ExitCode)
}

func (ci *criInstance) sandboxState(ctx context.Context, podID string) runtimeapi.PodSandboxState {
	ci.t.Helper()
	st, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		ci.t.Fatal(err)
	}
	return st.Status.State
}

func (ci *criInstance) podPid(podID, file string) int {
	ci.t.Helper()
	b, err := os.ReadFile(filepath.Join(ci.runRoot, "pods", podID, file))
	if err != nil {
		ci.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		ci.t.Fatal(err)
	}
	return pid
}

// probeHolder is what an app with CAP_SYS_PTRACE tries against pid 1 of
// its pod's shared pid namespace, the process holding that namespace.
func probeHolder(t *testing.T, ci *criInstance, ctx context.Context, debug string) {
	b := make([]byte, 6)
	rand.Read(b)
	probe := "runclet-probe-" + hex.EncodeToString(b)
	hostRoot, _ := os.ReadDir("/")
	if len(hostRoot) == 0 {
		t.Fatal("cannot list the host's /")
	}
	// /proc/1/root holds nothing of the host: at most the holder's own
	// program.
	out, code := ci.execIn(ctx, debug, "ls -A /proc/1/root/")
	if code != 0 {
		t.Fatalf("ls /proc/1/root: exit %d: %s", code, out)
	}
	if strings.TrimSpace(out) != "init" {
		t.Errorf("/proc/1/root lists %q; want only the holder's program", out)
	}
	for _, e := range hostRoot {
		if e.Name() != "init" && strings.Contains("\n"+out, "\n"+e.Name()+"\n") {
			t.Errorf("/proc/1/root shows the host's %s", e.Name())
		}
	}
	// Writing through it fails and reaches nothing of the host.
	for _, target := range []string{"/proc/1/root/tmp/" + probe, "/proc/1/root/" + probe} {
		if out, code := ci.execIn(ctx, debug, "echo x > "+target); code == 0 {
			t.Errorf("writing %s succeeded: %s", target, out)
		}
	}
	for _, p := range []string{"/tmp/" + probe, "/" + probe} {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("the app created %s on the host", p)
		}
	}
	// The holder's executable cannot be opened for writing.
	if out, code := ci.execIn(ctx, debug, ": >> /proc/1/exe"); code == 0 {
		t.Errorf("opening /proc/1/exe for writing succeeded: %s", out)
	}
	if out, code := ci.execIn(ctx, debug, "readlink /proc/1/exe"); code != 0 || strings.Contains(out, "stage1-runc") {
		t.Errorf("/proc/1/exe is %q (exit %d)", out, code)
	}
	// No capabilities, no_new_privs, a seccomp filter.
	status, code := ci.execIn(ctx, debug, "cat /proc/1/status")
	if code != 0 {
		t.Fatalf("cat /proc/1/status: %s", status)
	}
	for _, want := range []string{"\nCapPrm:\t0000000000000000\n", "\nCapEff:\t0000000000000000\n", "\nCapBnd:\t0000000000000000\n",
		"\nNoNewPrivs:\t1\n", "\nSeccomp:\t2\n"} {
		if !strings.Contains(status, want) {
			t.Errorf("holder status lacks %q:\n%s", strings.TrimSpace(want), status)
		}
	}
	// No descriptor of anybody's.
	if out, _ := ci.execIn(ctx, debug, "ls /proc/1/fd | wc -l"); strings.TrimSpace(out) != "0" {
		fds, _ := ci.execIn(ctx, debug, "ls -l /proc/1/fd")
		t.Errorf("the holder has descriptors: %s", fds)
	}
}

// The holder of a shared pid namespace, seen from an app of its pod with
// CAP_SYS_PTRACE, reaches nothing of the host (issue 11, item 2), and no
// signal from an app ends it (item 6).
func TestCRISharedPidHolderIsolated(t *testing.T) {
	for _, userns := range []bool{false, true} {
		t.Run(map[bool]string{false: "supervisor-holder", true: "userns-holder"}[userns], func(t *testing.T) {
			ci := newCRIInstance(t)
			if userns {
				for d := filepath.Dir(ci.root); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
					if err := os.Chmod(d, 0o711); err != nil {
						t.Fatal(err)
					}
				}
			}
			ci.startDaemon()
			ctx := ctxT(t)
			img := ci.pushBusybox()
			if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
				t.Fatal(err)
			}
			podID, debug, app := ci.sharedPidPod(ctx, "holder", img, userns)
			probeHolder(t, ci, ctx, debug)

			// Every signal an app can send pid 1 is ignored.
			holder := ci.podPid(podID, "pidns-init.pid")

			// The holder is charged to the pod, in a leaf of the pod's
			// cgroup, not to the supervisor (or stage0) that started it.
			leaf := "/runclet/" + podID + "/pidns-holder"
			cgs, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", holder))
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(cgs)), "\n") {
				f := strings.SplitN(line, ":", 3)
				if len(f) == 3 && (f[1] == "pids" || f[1] == "memory") && f[2] != leaf {
					t.Errorf("holder %d is in cgroup %q (%s), want %s", holder, f[2], line, leaf)
				}
			}
			leafDir, _ := hostcgroup.Dir("pids", leaf)
			if _, err := os.Stat(leafDir); err != nil {
				t.Errorf("the holder's cgroup: %v", err)
			}
			for _, sig := range []string{"TERM", "INT", "HUP", "QUIT", "USR1", "ABRT", "SEGV", "ILL", "SYS", "CHLD", "KILL"} {
				if out, code := ci.execIn(ctx, debug, "kill -"+sig+" 1"); code != 0 {
					t.Errorf("kill -%s 1: exit %d: %s", sig, code, out)
				}
			}
			if out, code := ci.execIn(ctx, app, "kill -TERM 1; kill -KILL 1"); code != 0 {
				t.Errorf("kill from the unprivileged app: %s", out)
			}
			time.Sleep(300 * time.Millisecond)
			if err := syscall.Kill(holder, 0); err != nil {
				t.Fatalf("the holder died of an app's signal: %v", err)
			}
			for _, c := range []string{debug, app} {
				if st := ci.containerStatus(ctx, c); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
					t.Errorf("container %s is %s after the signals", c, st.State)
				}
			}
			if s := ci.sandboxState(ctx, podID); s != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("pod is %s after the signals", s)
			}
			if out, code := ci.execIn(ctx, app, "echo alive"); code != 0 || out != "alive\n" {
				t.Errorf("exec after the signals: %q %d", out, code)
			}
			// Orphans reparented to the holder are reaped (by the kernel:
			// it ignores SIGCHLD).
			ci.execIn(ctx, app, "for i in 1 2 3 4 5; do (sleep 0.1 &); done")
			time.Sleep(500 * time.Millisecond)
			if out, _ := ci.execIn(ctx, app, "ps -o pid,stat,args"); strings.Contains(out, " Z ") || strings.Contains(out, "[sleep]") {
				t.Errorf("orphans are left as zombies:\n%s", out)
			}
			if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
				t.Fatal(err)
			}
			if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(holder, 0); err == nil {
				t.Errorf("holder %d alive after the pod was removed", holder)
			}
			if _, err := os.Stat(leafDir); !os.IsNotExist(err) {
				t.Errorf("the holder's cgroup %s is left after the pod was removed: %v", leafDir, err)
			}
		})
	}
}

// A pod that lost its supervisor, or its pid namespace's holder, is
// NOTREADY at once, its dead apps are reported exited, and removing it
// leaves nothing (issue 11, item 6).
func TestCRIPodProcessesKilled(t *testing.T) {
	ci := newCRIInstance(t)
	ci.startDaemon()
	ctx := ctxT(t)
	img := ci.pushBusybox()
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
		t.Fatal(err)
	}
	waitNotReady := func(t *testing.T, podID string, since time.Time) {
		t.Helper()
		for ci.sandboxState(ctx, podID) != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			if time.Since(since) > 2*time.Second {
				t.Fatalf("pod %s still READY %s after its process was killed", podID, time.Since(since))
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("pod %s NOTREADY %s after the kill", podID, time.Since(since).Round(time.Millisecond))
	}
	waitExited := func(t *testing.T, ctrs ...string) {
		t.Helper()
		for _, c := range ctrs {
			deadline := time.Now().Add(5 * time.Second)
			for ci.containerStatus(ctx, c).State != runtimeapi.ContainerState_CONTAINER_EXITED {
				if time.Now().After(deadline) {
					t.Fatalf("container %s is %s, want exited", c, ci.containerStatus(ctx, c).State)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	remove := func(t *testing.T, podID string) {
		t.Helper()
		if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Fatal(err)
		}
		if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Fatal(err)
		}
		if m := ci.mountsUnderRoots(); len(m) > 0 {
			t.Errorf("mounts left: %v", m)
		}
		if _, err := os.Stat(filepath.Join(ci.runRoot, "pods", podID)); err == nil {
			t.Errorf("run dir of %s left", podID)
		}
		for _, d := range cgroupDirs(podCgroup(podID)) {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("cgroup %s of %s left", d, podID)
			}
		}
	}

	// The holder alone: the apps die with their namespace, the supervisor
	// records it, and the pod refuses new apps with a clear error.
	t.Run("holder", func(t *testing.T) {
		podID, debug, app := ci.sharedPidPod(ctx, "noholder", img, false)
		holder := ci.podPid(podID, "pidns-init.pid")
		killed := time.Now()
		if err := syscall.Kill(holder, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitNotReady(t, podID, killed)
		waitExited(t, debug, app)
		cc := containerConfig("late", img, nil, "true")
		cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}
		sb := ci.sandboxConfig("noholder")
		_, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sb})
		if err == nil || !strings.Contains(err.Error(), "pid namespace holder") {
			t.Errorf("CreateContainer in a pod without its holder: %v", err)
		}
		remove(t, podID)
	})
	// Supervisor and holder, as an OOM kill of the pod would.
	t.Run("supervisor", func(t *testing.T) {
		podID, debug, app := ci.sharedPidPod(ctx, "nosup", img, false)
		sup, holder := ci.podPid(podID, "supervisor.pid"), ci.podPid(podID, "pidns-init.pid")
		killed := time.Now()
		if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(holder, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitNotReady(t, podID, killed)
		waitExited(t, debug, app)
		remove(t, podID)
	})
	// The supervisor alone: its apps run on, unmanaged, and are reported
	// unknown; stopping the pod kills them.
	t.Run("supervisor-only", func(t *testing.T) {
		podID, debug, app := ci.sharedPidPod(ctx, "supalone", img, false)
		pids := []int{appPid(t, ci, podID, debug), appPid(t, ci, podID, app), ci.podPid(podID, "pidns-init.pid")}
		killed := time.Now()
		if err := syscall.Kill(ci.podPid(podID, "supervisor.pid"), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitNotReady(t, podID, killed)
		if st := ci.containerStatus(ctx, app).State; st != runtimeapi.ContainerState_CONTAINER_UNKNOWN {
			t.Errorf("a running app without its supervisor is %s, want unknown", st)
		}
		remove(t, podID)
		// Nothing of the pod is left when RemovePodSandbox returns: not
		// the apps, not the holder that outlived its supervisor.
		for _, pid := range pids {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
				t.Errorf("pid %d of the pod lives after its removal: %s", pid, b)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	// A pod without apps (nothing live to resync) whose supervisor dies.
	t.Run("empty", func(t *testing.T) {
		run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: ci.sandboxConfig("empty")})
		if err != nil {
			t.Fatal(err)
		}
		sup := ci.podPid(run.PodSandboxId, "supervisor.pid")
		killed := time.Now()
		if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitNotReady(t, run.PodSandboxId, killed)
		remove(t, run.PodSandboxId)
	})
}

// `runclet list` and `status` say so when a CLI pod's supervisor and
// holder were killed, and rm still cleans up (the instance's cleanup
// checks mounts, cgroups and veths).
func TestCLIPodSupervisorKilled(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "--detach", "--share-pid", img, "--", "sleep", "300"))
	dir := filepath.Join(pi.runRoot, "pods", podID)
	for _, f := range []string{"supervisor.pid", "pidns-init.pid"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s %d: %v", f, pid, err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if out := pi.run("list"); !strings.Contains(out, "broken") || strings.Contains(out, ":running") {
		t.Errorf("list after the kill:\n%s", out)
	}
	if out := pi.run("status", podID); !strings.Contains(out, "broken: the pod supervisor is not running") || !strings.Contains(out, " exited ") {
		t.Errorf("status after the kill:\n%s", out)
	}
	pi.run("rm", podID)
}

// A foreground `runclet run` whose pod supervisor is killed under it ends
// with an error that says so instead of waiting for an exit nobody will
// record, and `gc` then removes the broken pod with everything it held
// (the instance's cleanup checks that nothing is left).
func TestForegroundRunAndGCAfterSupervisorDeath(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	var stdout, stderr syncBuffer
	run := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot,
		"run", "--name", "orphaned", img, "--", "sh", "-c", "echo up; sleep 300")
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	for i := 0; !strings.Contains(stdout.String(), "up"); i++ {
		if i == 600 {
			run.Process.Kill()
			t.Fatalf("the app never started: %q %q", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	podID := pi.status("orphaned").ID
	b, err := os.ReadFile(filepath.Join(pi.runRoot, "pods", podID, "supervisor.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("run exited 0 after its supervisor was killed; stderr %q", stderr.String())
		}
		if !strings.Contains(stderr.String(), "supervisor") {
			t.Errorf("run's error does not name the supervisor: %q", stderr.String())
		}
	case <-time.After(30 * time.Second):
		run.Process.Kill()
		t.Fatalf("foreground run still waiting 30s after its supervisor died; stderr %q", stderr.String())
	}
	if st := pi.status("orphaned"); !strings.Contains(pi.run("status", podID), "broken") {
		t.Errorf("status after the supervisor died: %+v", st)
	}
	pi.run("gc", "--grace=0")
	var pods []podJSON
	if err := json.Unmarshal([]byte(pi.run("list", "-o", "json")), &pods); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if p.ID == podID {
			t.Fatalf("gc left the broken pod: %+v", p)
		}
	}
	if _, err := os.Stat(filepath.Join(pi.root, "pods", podID)); err == nil {
		t.Fatal("gc left the broken pod's directory")
	}
}
