// Package hostcgroup finds cgroup directories the way the host mounts
// them (from mountinfo), so that tests hold on cgroup v1, hybrid and
// pure v2 hosts alike.
package hostcgroup

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"

	"github.com/runclet/runclet/integration/mountinfo"
)

// hierarchy is one mounted cgroup hierarchy.
type hierarchy struct {
	mountPoint  string
	v2          bool
	controllers []string // v1 only: the controllers bound to it
}

func hierarchies() []hierarchy {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var hs []hierarchy
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x != "-" || i+3 >= len(fields) {
				continue
			}
			switch fields[i+1] {
			case "cgroup":
				h := hierarchy{mountPoint: mountinfo.Unescape(fields[4])}
				for _, o := range strings.Split(fields[i+3], ",") {
					if o != "rw" && o != "ro" && !strings.Contains(o, "=") {
						h.controllers = append(h.controllers, o)
					}
				}
				hs = append(hs, h)
			case "cgroup2":
				hs = append(hs, hierarchy{mountPoint: mountinfo.Unescape(fields[4]), v2: true})
			}
		}
	}
	return hs
}

// Mounts returns the mount point of every cgroup v1 and v2 hierarchy.
func Mounts() []string {
	var out []string
	for _, h := range hierarchies() {
		out = append(out, h.mountPoint)
	}
	return out
}

// Dirs returns the directory of cgroup path rel in every hierarchy.
func Dirs(rel string) []string {
	var out []string
	for _, m := range Mounts() {
		out = append(out, filepath.Join(m, rel))
	}
	return out
}

// Dir returns the directory of cgroup path rel in the hierarchy that has
// controller (a v1 hierarchy that binds it, else the v2 one), and whether
// that hierarchy is v2 (whose files are named differently).
func Dir(controller, rel string) (dir string, v2 bool) {
	var unified string
	for _, h := range hierarchies() {
		if h.v2 {
			unified = h.mountPoint
			continue
		}
		for _, c := range h.controllers {
			if c == controller {
				return filepath.Join(h.mountPoint, rel), false
			}
		}
	}
	return filepath.Join(unified, rel), true
}
