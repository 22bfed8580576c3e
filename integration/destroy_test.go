package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Apps whose supervisor was SIGKILLed while they ran are removed whole,
// one by `app rm` and the other with its pod: `stage1-runc destroy` kills
// each app's processes (a background child included) and removes its
// cgroups and libcontainer state, which stage0 no longer does by hand.
func TestRemovingAppsWhoseSupervisorWasKilled(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	sb := lastLine(pi.run("app", "sandbox", "--name", "orphans"))
	type appOf struct {
		id, state string
		cgroups   []string
		pids      []int
	}
	var apps []*appOf
	for _, name := range []string{"a", "b"} {
		id := lastLine(pi.run("app", "add", "--name", name, sb, img, "--", "sh", "-c", "sleep 1000 & exec sleep 1001"))
		pi.run("app", "start", sb, id)
		apps = append(apps, &appOf{id: id, state: filepath.Join(pi.runRoot, "runc", id)})
	}
	parent := pi.status(sb).CgroupParent
	for _, a := range apps {
		a.cgroups = cgroupDirs(parent + "/" + a.id)
		for deadline := time.Now().Add(10 * time.Second); len(a.pids) < 2; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the processes of app %s in %v: %v", a.id, a.cgroups, a.pids)
			}
			a.pids = cgroupPids(a.cgroups)
		}
		if _, err := os.Stat(a.state); err != nil {
			t.Fatalf("libcontainer state of the running app: %v", err)
		}
	}

	b, err := os.ReadFile(filepath.Join(pi.runRoot, "pods", sb, "supervisor.pid"))
	if err != nil {
		t.Fatal(err)
	}
	sup, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); alive(sup); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("supervisor %d survives SIGKILL", sup)
		}
	}
	gone := func(a *appOf, after string) {
		t.Helper()
		for _, pid := range a.pids {
			if alive(pid) {
				t.Errorf("process %d of app %s survives %s", pid, a.id, after)
			}
		}
		for _, dir := range a.cgroups {
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("cgroup %s of app %s left after %s", dir, a.id, after)
			}
		}
		if _, err := os.Stat(a.state); !os.IsNotExist(err) {
			t.Errorf("libcontainer state %s left after %s: %v", a.state, after, err)
		}
	}
	for _, a := range apps {
		for _, pid := range a.pids {
			if !alive(pid) {
				t.Fatalf("process %d died with its supervisor: nothing left to test", pid)
			}
		}
	}

	pi.run("app", "rm", sb, apps[0].id)
	gone(apps[0], "app rm")
	for _, pid := range apps[1].pids {
		if !alive(pid) {
			t.Fatalf("app rm of %s killed %d of the other app", apps[0].id, pid)
		}
	}
	pi.run("rm", sb)
	gone(apps[1], "rm of its pod")
}

// cgroupPids lists the processes of the first of dirs that exists.
func cgroupPids(dirs []string) []int {
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	return nil
}

// alive says whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
