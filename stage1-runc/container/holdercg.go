package container

import (
	"fmt"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
)

// The process that holds a pod's shared pid namespace belongs to the pod,
// not to the supervisor that started it: it is charged to the pod's
// cgroup and killed with it, as containerd's pause container is. Under
// cgroup v2 a cgroup with children may hold no process, so it gets a leaf
// of its own beside the apps'.

// holderManager is the cgroup manager of a leaf given as an OCI
// cgroupsPath: an absolute path for cgroupfs, "slice:prefix:name" for
// systemd.
func holderManager(opts Options, cgroupsPath string) (cgroups.Manager, error) {
	// Not SkipDevices: cgroup v1 managers find, list and kill a cgroup
	// through its devices directory, so the holder joins that controller
	// too (it inherits the parent's rules there; no rule is ever set).
	cg := &cgroups.Cgroup{Resources: &cgroups.Resources{}, Systemd: opts.SystemdCgroup}
	if opts.SystemdCgroup {
		parts := strings.Split(cgroupsPath, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("systemd cgroup path %q is not slice:prefix:name", cgroupsPath)
		}
		cg.Parent, cg.ScopePrefix, cg.Name = parts[0], parts[1], parts[2]
	} else {
		cg.Path = cgroupsPath
	}
	return manager.New(cg)
}

// JoinHolderCgroup moves pid (a process that cannot fork) into the leaf
// cgroup at cgroupsPath, creating it.
func JoinHolderCgroup(opts Options, cgroupsPath string, pid int) error {
	m, err := holderManager(opts, cgroupsPath)
	if err != nil {
		return fmt.Errorf("the pid namespace holder's cgroup %s: %w", cgroupsPath, err)
	}
	if err := m.Apply(pid); err != nil {
		return fmt.Errorf("move the pid namespace holder into cgroup %s: %w", cgroupsPath, err)
	}
	return nil
}

// RemoveHolderCgroup removes that leaf once its process is gone.
func RemoveHolderCgroup(opts Options, cgroupsPath string) error {
	m, err := holderManager(opts, cgroupsPath)
	if err != nil {
		return err
	}
	return m.Destroy()
}

// DestroyHolderCgroup kills whatever still runs in that leaf (a holder
// its supervisor did not end) and removes it.
func DestroyHolderCgroup(opts Options, cgroupsPath string) error {
	m, err := holderManager(opts, cgroupsPath)
	if err != nil || !m.Exists() {
		return err
	}
	if err := killCgroup(m); err != nil {
		return err
	}
	return m.Destroy()
}
