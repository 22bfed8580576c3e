package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fdsTo lists pid's descriptors that point under dir.
func fdsTo(pid int, dir string) []string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, e := range ents {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(target, dir) {
			out = append(out, e.Name()+"->"+target)
		}
	}
	return out
}

// A descriptor the daemon inherited without close-on-exec (a file and a
// host directory) reaches neither the supervisors, nor the holder, nor the
// apps and their execs; and an app whose working directory is
// /proc/self/fd/N (CVE-2024-21626) does not get a host directory (issue
// 11, item 12).
func TestCRIInheritedFDsDoNotLeak(t *testing.T) {
	ci := newCRIInstance(t)
	secret := t.TempDir()
	os.Chmod(secret, 0o755)
	const marker = "runclet-host-marker"
	if err := os.WriteFile(filepath.Join(secret, marker), []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(filepath.Join(secret, marker))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var files []*os.File
	for i := 0; i < 8; i++ { // fds 3..10 of the daemon: the file, then the directory
		f := file
		if i > 0 {
			if f, err = os.Open(secret); err != nil {
				t.Fatal(err)
			}
			defer f.Close()
		}
		files = append(files, f)
	}
	ci.extraFiles = files
	ci.startDaemon()
	if got := fdsTo(ci.daemon.Process.Pid, secret); len(got) != 8 {
		t.Fatalf("the daemon did not inherit the descriptors: %v", got)
	}
	ctx := ctxT(t)
	img := ci.pushBusybox()
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
		t.Fatal(err)
	}
	podID, debug, app := ci.sharedPidPod(ctx, "fds", img, false)
	for _, who := range []struct {
		what string
		pid  int
	}{
		{"supervisor", ci.podPid(podID, "supervisor.pid")},
		{"pid namespace holder", ci.podPid(podID, "pidns-init.pid")},
		{"app", appPid(t, ci, podID, app)},
		{"debug app", appPid(t, ci, podID, debug)},
	} {
		if got := fdsTo(who.pid, secret); len(got) > 0 {
			t.Errorf("the %s (pid %d) has the daemon's descriptors: %v", who.what, who.pid, got)
		}
	}
	if out, _ := ci.execIn(ctx, app, "ls -l /proc/self/fd/ | grep -c "+marker+"; ls -l /proc/self/fd/"); !strings.HasPrefix(out, "0\n") {
		t.Errorf("an exec sees the daemon's descriptors:\n%s", out)
	}

	// The working directory /proc/self/fd/N either fails or reaches no
	// host directory.
	sb := ci.sandboxConfig("fds")
	for n := 3; n <= 10; n++ {
		cc := containerConfig("cwd"+strconv.Itoa(n), img, nil, "sh", "-c",
			"for d in . .. ../.. ../../.. ../../../..; do test -e $d/"+marker+" && { echo found in $d; exit 3; }; done; exit 0")
		cc.WorkingDir = "/proc/self/fd/" + strconv.Itoa(n)
		cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}
		cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sb})
		if err != nil {
			t.Logf("cwd %s: create refused: %v", cc.WorkingDir, err)
			continue
		}
		if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Logf("cwd %s: start refused: %v", cc.WorkingDir, err)
			continue
		}
		if st := ci.waitState(ctx, cr.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
			log, _ := os.ReadFile(filepath.Join(sb.LogDirectory, cc.LogPath))
			t.Errorf("cwd %s reached the host directory (exit %d): %s", cc.WorkingDir, st.ExitCode, log)
		}
	}
}

// A request line longer than the contract's bound is refused with an
// error at once, not read on and on into the supervisor's memory (issue
// 11, item 12).
func TestSupervisorRefusesHugeRequestLine(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "--detach", img, "--", "sleep", "300"))
	dir, err := os.Open(filepath.Join(pi.runRoot, "pods", podID)) // the path is too long for a socket address
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	conn, err := net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d/supervisor.sock", dir.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { // 16 MiB without a newline; the supervisor stops reading
		chunk := []byte(strings.Repeat("a", 64<<10))
		for i := 0; i < 256; i++ {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "longer than") || !strings.Contains(line, "invalid") {
		t.Fatalf("answer to a huge request line: %q %v", line, err)
	}
	conn.Close()
	pi.run("stop", "--timeout", "0s", podID)
	pi.run("rm", podID)
}
