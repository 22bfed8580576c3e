package hostcgroup

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// This process's own cgroup, found through Dir, lists this process: the
// paths Dir builds are the host's real ones, v1 or v2.
func TestDirFindsThisProcessCgroup(t *testing.T) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || (f[1] != "memory" && f[1] != "pids" && f[1] != "") {
			continue
		}
		controller := f[1]
		if controller == "" {
			controller = "pids"
		}
		dir, v2 := Dir(controller, f[2])
		if (f[1] == "") != v2 {
			continue // a v2 line on a host whose pids are v1, or the other way round
		}
		procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(os.Getpid())+"\n") {
			t.Fatalf("%s does not list pid %d", dir, os.Getpid())
		}
		checked++
	}
	if checked == 0 {
		t.Fatalf("no memory, pids or v2 line in /proc/self/cgroup:\n%s", b)
	}
}
