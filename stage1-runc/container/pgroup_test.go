package container

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Killing an exec after it was reaped must not reach a process that
// reused its pid (issue 11, item 9). The scenario needs a pid reused on
// purpose, so it runs in a private pid namespace (this test binary again,
// as its pid 1), whose next pid it sets through ns_last_pid; the old
// kill(-pid) killed the unrelated group there.
func TestPgroupKillAfterReapSparesReusedPid(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: a pid namespace whose next pid it sets")
	}
	// Twice: with pidfd group signals (kernel 6.9+), and with kill(-pid)
	// as on older kernels (Debian 12's 6.1, where the vmtest guest found
	// a timed-out exec's background child surviving).
	for _, legacy := range []string{"0", "1"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPgroupHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "RUNCLET_PGROUP_HELPER=1", "RUNCLET_PGROUP_LEGACY="+legacy)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestPgroupHelper") {
			t.Fatalf("helper in a pid namespace (legacy %s): %v\n%s", legacy, err, out)
		}
		t.Logf("legacy %s: %s", legacy, out)
	}
}

func TestPgroupHelper(t *testing.T) {
	if os.Getenv("RUNCLET_PGROUP_HELPER") != "1" {
		t.Skip("run by TestPgroupKillAfterReapSparesReusedPid")
	}
	if os.Getenv("RUNCLET_PGROUP_LEGACY") == "1" {
		pidfdGroupSignals = false
	}
	alive := func(pid int) bool {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		return err == nil && got == 0
	}
	// Before the reap, the group goes: the leader and its background
	// child.
	sh := exec.Command("sh", "-c", "sleep 100 & echo $!; wait")
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, _ := sh.StdoutPipe()
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	bg, _ := strconv.Atoi(strings.TrimSpace(line))
	g := openPgroup(sh.Process.Pid)
	g.kill()
	sh.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(bg, 0) == nil {
		var ws syscall.WaitStatus
		syscall.Wait4(bg, &ws, syscall.WNOHANG, nil) // reparented to us, pid 1
		if time.Now().After(deadline) {
			t.Fatalf("background child %d of the killed group lives", bg)
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.close()

	for attempt := 0; attempt < 20; attempt++ {
		a := exec.Command("sleep", "100")
		a.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		g := openPgroup(a.Process.Pid)
		a.Process.Kill()
		a.Wait() // reaped: its pid and group id are free
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(a.Process.Pid-1)), 0); err != nil {
			t.Fatal(err)
		}
		b := exec.Command("sleep", "100")
		b.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		if b.Process.Pid != a.Process.Pid {
			b.Process.Kill()
			b.Wait()
			g.close()
			continue // a thread of ours took the pid first
		}
		if syscall.Kill(-a.Process.Pid, 0) != nil {
			t.Fatal("the reused pid leads no group: the scenario proves nothing")
		}
		g.kill() // what a late Kill of the reaped exec does
		time.Sleep(100 * time.Millisecond)
		ok := alive(b.Process.Pid)
		b.Process.Kill()
		b.Wait()
		g.close()
		if !ok {
			t.Fatalf("killing the reaped process %d killed the unrelated group that reused its pid", a.Process.Pid)
		}
		t.Logf("pid %d reused by an unrelated group: spared", a.Process.Pid)
		return
	}
	t.Skip("could not get a pid reused")
}
