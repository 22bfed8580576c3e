package pod

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// UserNSConfig asks for a pod-wide user namespace (Kubernetes' hostUsers:
// false) with these mappings, container id → host id.
type UserNSConfig struct {
	UIDMap []specs.LinuxIDMapping `json:"uidMap"`
	GIDMap []specs.LinuxIDMapping `json:"gidMap"`
}

// checkUserNS refuses what a pod user namespace cannot be: like kubelet,
// one mapping per kind (so ids are contiguous and idmapped mounts can use
// it), container id 0 mapped, and no host namespace beside it.
func checkUserNS(u *UserNSConfig, p *Pod) error {
	if u == nil {
		return nil
	}
	if err := u.Validate(); err != nil {
		return err
	}
	switch {
	case p.Flavor != FlavorRunc:
		return errdefs.InvalidArgument("user namespaces need stage1 flavor runc, not %s", p.Flavor)
	case p.HostNetwork || p.HostPID || p.HostIPC:
		return errdefs.InvalidArgument("a pod with a user namespace cannot use the host's network, pid or ipc namespace")
	}
	return nil
}

// Validate checks the mappings alone (InvalidArgument).
func (u *UserNSConfig) Validate() error {
	for _, k := range []struct {
		kind string
		m    []specs.LinuxIDMapping
	}{{"uid", u.UIDMap}, {"gid", u.GIDMap}} {
		kind, m := k.kind, k.m
		if len(m) != 1 {
			return errdefs.InvalidArgument("user namespace: want exactly one %s mapping, got %d", kind, len(m))
		}
		if m[0].ContainerID != 0 || m[0].Size == 0 {
			return errdefs.InvalidArgument("user namespace: the %s mapping must start at container id 0 and be non-empty (got %d→%d, %d ids)",
				kind, m[0].ContainerID, m[0].HostID, m[0].Size)
		}
		if uint64(m[0].HostID)+uint64(m[0].Size) > 1<<32-1 {
			return errdefs.InvalidArgument("user namespace: the %s mapping %d+%d overflows host ids", kind, m[0].HostID, m[0].Size)
		}
	}
	return nil
}

// pinUserNamespaces creates the pod's user namespace with its net, uts and
// ipc namespaces owned by it, so that root in the pod can administer them
// (sysfs, mqueue, sysctls), and pins all four under the pod's run dir.
// The namespaces are made by stage1's ns-holder, a short-lived child; for
// a pod whose apps share a pid namespace it also makes that one (owned by
// the user namespace, so the apps can mount /proc) and stays as its init.
func (m *Manager) pinUserNamespaces(p *Pod, u *UserNSConfig) (retErr error) {
	dir := filepath.Join(m.l.RunDir(p.ID), "ns")
	p.UserNS = filepath.Join(dir, "user")
	p.NetNS = filepath.Join(dir, "net")
	p.UTSNS = filepath.Join(dir, "uts")
	p.IPCNS = filepath.Join(dir, "ipc")
	pins := []struct{ kind, path string }{{"user", p.UserNS}, {"net", p.NetNS}, {"uts", p.UTSNS}, {"ipc", p.IPCNS}}
	args := []string{"ns-holder", p.Hostname}
	attr := &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		UidMappings:                sysMappings(u.UIDMap),
		GidMappings:                sysMappings(u.GIDMap),
		GidMappingsEnableSetgroups: true,
		// Root of the new namespace, or exec would drop its capabilities
		// there (host root is not mapped into it).
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
		Pdeathsig:  syscall.SIGKILL,
	}
	if p.SharePID {
		p.PIDNS = filepath.Join(dir, "pid")
		pins = append(pins, struct{ kind, path string }{"pid", p.PIDNS})
		args = []string{"ns-holder", "--pid-ns", p.Hostname}
		// It must outlive this process (the CLI, or a daemon restart).
		attr.Cloneflags |= syscall.CLONE_NEWPID
		attr.Setsid, attr.Pdeathsig = true, 0
	}
	// Exec'd through a descriptor: as the pod's root it may not be allowed
	// to search the directories on the binary's path.
	bin, err := os.Open(m.opts.Stage1Path)
	if err != nil {
		return fmt.Errorf("the pod's namespace holder: %w", err)
	}
	defer bin.Close()
	cmd := exec.Command("/proc/self/fd/3", args...)
	cmd.ExtraFiles = []*os.File{bin}
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = attr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the pod's namespace holder %s: %w", m.opts.Stage1Path, err)
	}
	defer func() {
		stdin.Close()
		if retErr != nil {
			cmd.Process.Kill()
			for _, ns := range pins {
				unpinNS(ns.path)
			}
		}
		if !p.SharePID || retErr != nil {
			if err := cmd.Wait(); err != nil && retErr == nil {
				retErr = fmt.Errorf("the pod's namespace holder: %w", err)
			}
			return
		}
		go cmd.Wait() // reaped when the pod goes, or by init once this process exits
	}()
	if p.SharePID {
		// Recorded first, so that removing the pod ends it whenever a
		// crash interrupts this.
		if err := fsutil.WriteFileAtomic(proto.HolderPidPath(m.l.RunDir(p.ID)), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
			return err
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("the pod's namespace holder did not get ready (%q): %v", line, err)
	}
	for _, ns := range pins {
		if err := pinNS(fmt.Sprintf("/proc/%d/ns/%s", cmd.Process.Pid, ns.kind), ns.path); err != nil {
			return err
		}
	}
	return nil
}

func sysMappings(in []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(in))
	for i, m := range in {
		out[i] = syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)}
	}
	return out
}
