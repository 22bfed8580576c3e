package kube

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/runclet/runclet/integration/mountinfo"
)

// HostSysctls are the host settings kubelet changes at start
// (container_manager_linux.go setupKernelTunables) plus the ones the CNI
// bridge plugin turns on; they are saved first and restored at the end.
var HostSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward",
}

// HostState is what the run changes on the host and has to give back.
type HostState struct {
	sysctls    map[string]string
	cgroupDirs []string // the cgroup root made in every hierarchy
	newDirs    []string // host directories that did not exist before (made by kubelet or containerd)
	links      []string // network links to delete
}

// SaveHost records the host sysctls, which of watchDirs do not exist yet
// and which links must be deleted at the end, and makes each of
// cgroupRoots (in order, so a parent comes before its children) in every
// cgroup hierarchy; none may exist already.
func SaveHost(cgroupRoots []string, watchDirs []string, links []string) (*HostState, error) {
	h := &HostState{sysctls: map[string]string{}, links: links}
	for _, k := range HostSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			h.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, d := range watchDirs {
		if _, err := os.Lstat(d); errors.Is(err, fs.ErrNotExist) {
			h.newDirs = append(h.newDirs, d)
		}
	}
	for _, l := range links {
		if _, err := os.Stat("/sys/class/net/" + l); err == nil {
			return nil, fmt.Errorf("network link %s exists already: another run may be active (delete it with ip link del %s)", l, l)
		}
	}
	mps, err := CgroupMounts()
	if err != nil {
		return nil, err
	}
	for _, mp := range mps {
		for _, cgroupRoot := range cgroupRoots {
			d := filepath.Join(mp, cgroupRoot)
			if _, err := os.Stat(d); err == nil {
				return nil, fmt.Errorf("cgroup %s exists already: another run may be active", d)
			}
		}
	}
	for _, mp := range mps {
		for _, cgroupRoot := range cgroupRoots {
			d := filepath.Join(mp, cgroupRoot)
			if err := os.Mkdir(d, 0o755); err != nil {
				h.Restore()
				return nil, fmt.Errorf("creating cgroup root: %w", err)
			}
			h.cgroupDirs = append(h.cgroupDirs, d)
			// A cpuset cgroup v1 starts with empty cpus and mems: copy the parent's.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(filepath.Dir(d), f)); err == nil {
					if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
						h.Restore()
						return nil, fmt.Errorf("copying %s to %s: %w", f, d, err)
					}
				}
			}
		}
	}
	return h, nil
}

// CgroupMounts returns the mount points of every cgroup (v1) and cgroup2
// hierarchy of this mount namespace.
func CgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				mps = append(mps, fields[4])
			}
		}
	}
	return mps, sc.Err()
}

// Restore gives back what SaveHost recorded: sysctls, the cgroup root
// (children first; cgroups with processes left are reported), links and
// the host directories that were made during the run.
func (h *HostState) Restore() {
	for _, l := range h.links {
		if _, err := os.Stat("/sys/class/net/" + l); err == nil {
			if out, err := exec.Command("ip", "link", "del", l).CombinedOutput(); err != nil {
				log.Printf("ip link del %s: %v: %s", l, err, out)
			}
		}
	}
	for i := len(h.cgroupDirs) - 1; i >= 0; i-- {
		removeCgroupTree(h.cgroupDirs[i])
	}
	for k, v := range h.sysctls {
		cur, _ := os.ReadFile("/proc/sys/" + k)
		if strings.TrimSpace(string(cur)) != v {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				log.Printf("restoring sysctl %s=%s: %v", k, v, err)
			}
		}
	}
	for i := len(h.newDirs) - 1; i >= 0; i-- {
		d := h.newDirs[i]
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Printf("leaving %s (made during the run): %v", d, err)
		}
	}
}

// removeCgroupTree removes the cgroup directory d and its descendants,
// deepest first. cgroup directories hold only control files, which rmdir
// does not mind.
func removeCgroupTree(d string) {
	var dirs []string
	filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, p := range dirs {
		if err := syscall.Rmdir(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			procs, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			log.Printf("cannot remove cgroup %s: %v (processes: %s)", p, err, strings.Join(strings.Fields(string(procs)), " "))
		}
	}
}

// UnmountUnder detaches every mount at or below one of the dirs, deepest
// first (a mount point can be listed more than once).
func UnmountUnder(dirs ...string) {
	for round := 0; round < 5; round++ {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return
		}
		var left []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			mp := mountinfo.Unescape(f[4])
			for _, d := range dirs {
				if mp == d || strings.HasPrefix(mp, d+"/") {
					left = append(left, mp)
					break
				}
			}
		}
		if len(left) == 0 {
			return
		}
		sort.Sort(sort.Reverse(sort.StringSlice(left)))
		for _, m := range left {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
}

// RemoveLogSymlinks removes the /var/log/containers symlinks kubelet made
// for this run's containers (those pointing into podLogsDir).
func RemoveLogSymlinks(podLogsDir string) {
	ents, err := os.ReadDir("/var/log/containers")
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join("/var/log/containers", e.Name())
		if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, podLogsDir+"/") {
			os.Remove(p)
		}
	}
}
