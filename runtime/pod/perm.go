package pod

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

// Who may reach what under the data and run roots (CVE-2021-41103 is
// what happens otherwise: a host user runs a container's setuid-root
// file through the app's upper dir or rootfs mount point).
//
// Everything is private to root: the data root, the run root and every
// directory under them are 0700, so no host user can list or reach a
// container's files. The app's overlay is mounted without nosuid, as
// apps need their own setuid programs (su, ping); it is the host path to
// it that is closed.
//
// A pod with a user namespace is the one thing besides host root that
// must walk the tree: libcontainer's init resolves the rootfs and bind
// sources as the pod's root, a host uid and gid of its own. Each such pod
// gets its own way through and nothing more:
//   - the data root and <root>/pods keep mode 0700 plus a POSIX ACL entry
//     "group:<pod root gid>:--x" per user-namespaced pod (search, not
//     list), kept in step with the pods on disk by syncTraverse;
//   - the pod's directories on the way to its bundles (pod dir, etc,
//     apps, each app dir, bundle, imagevols) are 0710 root:<pod root gid>.
//
// Nothing is ever o+x.

// podGID is the host gid of the pod's root, -1 without a user namespace.
func podGID(p *Pod) int {
	if p == nil || p.IDMap == nil || len(p.IDMap.GIDMap) == 0 {
		return -1
	}
	return int(p.IDMap.GIDMap[0].HostID)
}

// restrictDir sets a directory on the way to a pod's bundles: 0700
// root:root, or 0710 root:<pod root gid> for a user-namespaced pod.
// It never follows a symlink.
func restrictDir(dir string, gid int) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("restrict %s: %w", dir, err)
	}
	defer unix.Close(fd)
	mode := uint32(0o700)
	if gid >= 0 {
		mode = 0o710
	} else {
		gid = 0
	}
	if err := unix.Fchown(fd, 0, gid); err != nil {
		return fmt.Errorf("restrict %s: %w", dir, err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("restrict %s: %w", dir, err)
	}
	return nil
}

// mkdirRestricted makes dir (its parent exists) and restricts it.
func mkdirRestricted(dir string, gid int) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return restrictDir(dir, gid)
}

// mkdirPrivate makes dir and any missing parent 0700 and sets dir itself
// to 0700 (parents that exist are left alone).
func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fsutil.PrivateDir(dir, nil)
}

// makePodDirs creates a pod's directories with their modes.
func (m *Manager) makePodDirs(p *Pod) error {
	gid := podGID(p)
	for _, d := range []string{m.l.PodDir(p.ID), m.l.EtcDir(p.ID), filepath.Join(m.l.PodDir(p.ID), "apps")} {
		if err := mkdirRestricted(d, gid); err != nil {
			return err
		}
	}
	for _, d := range []string{m.l.RunDir(p.ID), filepath.Join(m.l.RunDir(p.ID), "ns")} {
		if err := mkdirRestricted(d, -1); err != nil {
			return err
		}
	}
	return nil
}

// makeAppDirs creates an app's directories: the app dir and its bundle
// (the way to the rootfs) for the pod's root, fs (upper and work) for
// host root only.
func (m *Manager) makeAppDirs(p *Pod, appID string) error {
	gid := podGID(p)
	dir := m.l.AppDir(p.ID, appID)
	for _, d := range []struct {
		path string
		gid  int
	}{{dir, gid}, {m.l.Bundle(p.ID, appID), gid}, {filepath.Join(dir, "fs"), -1}} {
		if err := mkdirRestricted(d.path, d.gid); err != nil {
			return err
		}
	}
	return nil
}

// syncTraverse sets the ACLs of the data root and <root>/pods to let the
// root of each user-namespaced pod on disk search them, and no one else.
// It holds a lock on the data root, so concurrent runclet processes
// agree; a pod must be on disk before it is counted.
func (m *Manager) syncTraverse() error {
	f, err := os.Open(m.l.Root)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", m.l.Root, err)
	}
	pods, err := m.l.ListPods()
	if err != nil {
		return err
	}
	var gids []uint32
	for _, p := range pods {
		if g := podGID(p); g >= 0 {
			gids = append(gids, uint32(g))
		}
	}
	for _, d := range []string{m.l.Root, m.l.podsDir()} {
		if err := fsutil.PrivateDir(d, gids); err != nil {
			if errors.Is(err, fsutil.ErrNoACL) {
				return errdefs.FailedPrecondition("user namespaces need POSIX ACLs on the data root's filesystem, so the pod's root can reach its bundle without opening %s to every host user: %v", m.l.Root, err)
			}
			return err
		}
	}
	return nil
}

// tightenStore makes the roots private and, for a store an older runclet
// made (its pods dir open to others), every pod's directories too.
func (m *Manager) tightenStore() error {
	for _, d := range []string{m.l.RunRoot, filepath.Join(m.l.RunRoot, "pods"), m.l.StateRoot()} {
		if err := mkdirPrivate(d); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(m.l.podsDir(), 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(m.l.podsDir())
	if err != nil {
		return err
	}
	// Group bits may be an ACL's mask (user-namespaced pods); what an
	// older runclet left is o+x.
	if fi.Mode().Perm()&0o007 == 0 {
		if st, err := os.Stat(m.l.Root); err == nil && st.Mode().Perm()&0o007 == 0 {
			return nil // made by this runclet: nothing to tighten
		}
	}
	pods, err := m.l.ListPods()
	if err != nil {
		return err
	}
	for _, p := range pods {
		if err := m.restrictPod(p); err != nil {
			return err
		}
	}
	return m.syncTraverse()
}

// restrictPod sets the modes of an existing pod's directories.
func (m *Manager) restrictPod(p *Pod) error {
	gid := podGID(p)
	var errs []error
	restrict := func(d string, gid int) {
		if err := restrictDir(d, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{m.l.PodDir(p.ID), m.l.EtcDir(p.ID), filepath.Join(m.l.PodDir(p.ID), "apps")} {
		restrict(d, gid)
	}
	for _, d := range []string{m.l.RunDir(p.ID), filepath.Join(m.l.RunDir(p.ID), "ns")} {
		restrict(d, -1)
	}
	ents, _ := os.ReadDir(filepath.Join(m.l.PodDir(p.ID), "apps"))
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := m.l.AppDir(p.ID, e.Name())
		for _, d := range []string{dir, m.l.Bundle(p.ID, e.Name()), m.l.imageVolumesDir(p.ID, e.Name())} {
			restrict(d, gid)
		}
		restrict(filepath.Join(dir, "fs"), -1)
	}
	return errors.Join(errs...)
}

// forgetPodGroup drops a removed user-namespaced pod's ACL entries. The
// pod is gone by then, so a failure is only logged: the entry is dropped
// by the next sync (the next such pod's creation or removal, or a start
// that tightens the store).
func (m *Manager) forgetPodGroup(p *Pod) error {
	if podGID(p) < 0 {
		return nil
	}
	if err := m.syncTraverse(); err != nil {
		slog.Warn("drop a removed pod's search permission on the data root", "pod", p.ID, "err", err)
	}
	return nil
}
