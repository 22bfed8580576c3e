package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"
)

// DestroyByID removes a container its supervisor left behind (it died,
// even in the middle of creating it), as `runc delete --force` would:
// every process in the container's cgroup is killed, then the cgroup and
// the libcontainer state are removed. The cgroup is the one the state
// records; a container whose state was never written is found through
// bundle's config.json (bundle "" skips that). A container with nothing
// left is not an error.
func DestroyByID(opts Options, id, bundle string) error {
	var errs []error
	var mgr cgroups.Manager
	if c, err := libcontainer.Load(opts.StateRoot, id); err == nil {
		cfg := c.Config()
		var paths map[string]string
		if st, err := c.State(); err == nil {
			paths = st.CgroupPaths
		}
		mgr, err = manager.NewWithPaths(cfg.Cgroups, paths)
		errs = append(errs, err)
	} else if bundle != "" { // no state, or state unreadable
		mgr, err = bundleCgroup(id, bundle, opts.SystemdCgroup)
		errs = append(errs, err)
	} else if !errors.Is(err, libcontainer.ErrNotExist) {
		errs = append(errs, err)
	}
	if mgr != nil && mgr.Exists() {
		errs = append(errs, killCgroup(mgr))
		if err := mgr.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("remove the cgroup of %s: %w", id, err))
		}
	}
	errs = append(errs, os.RemoveAll(filepath.Join(opts.StateRoot, id)))
	return errors.Join(errs...)
}

// DestroyCgroupTree kills every process in the cgroupfs tree at path
// (relative to each hierarchy's root) and removes the tree: a pod's
// cgroup, which libcontainer made as the parent of its apps'.
func DestroyCgroupTree(path string) error {
	m, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil || !m.Exists() {
		return err
	}
	if err := killCgroup(m); err != nil {
		return err
	}
	return m.Destroy()
}

// bundleCgroup is the cgroup manager of the container id would be, made
// from its bundle; nil when the bundle is gone.
func bundleCgroup(id, bundle string, systemd bool) (cgroups.Manager, error) {
	s, err := readSpec(bundle)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(bundle, "config.json")); errors.Is(serr, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	cg, err := specconv.CreateCgroupConfig(&specconv.CreateOpts{CgroupName: id, UseSystemdCgroup: systemd, Spec: s}, nil)
	if err != nil {
		return nil, err
	}
	return manager.New(cg)
}

// killCgroup SIGKILLs every process of the cgroup (frozen meanwhile, so
// none forks away) until none is left, for at most 5 s.
func killCgroup(m cgroups.Manager) error {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		pids, err := m.GetAllPids()
		if err != nil || len(pids) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive SIGKILL", pids)
		}
		m.Freeze(cgroups.Frozen)
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		m.Freeze(cgroups.Thawed)
	}
}
