package pod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupMounts lists this host's cgroup hierarchies (v1 controllers and
// the v2 unified tree, whichever are mounted).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := parseCgroupMounts(f)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mnt := range h.v1 {
		if !slices.Contains(out, mnt) {
			out = append(out, mnt)
		}
	}
	if h.unified != "" {
		out = append(out, h.unified)
	}
	return out, nil
}

// removeCgroup kills every process left in the cgroup tree at path
// (relative to each hierarchy's root) and removes the tree in every
// hierarchy. It is what cleans up after a supervisor that died.
func removeCgroup(path string) error {
	if path == "" || path == "/" {
		return nil
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		dir := filepath.Join(m, path)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := killTree(dir); err != nil {
			errs = append(errs, err)
		}
		if err := rmdirTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func killTree(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := treePids(dir)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes %v survive SIGKILL", dir, pids)
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func treePids(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// rmdirTree removes a cgroup directory and its children, deepest first
// (cgroupfs directories are removed with rmdir, never unlink).
func rmdirTree(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 50; try++ {
			if err = unix.Rmdir(dirs[i]); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond) // a dying process is still charged
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}
