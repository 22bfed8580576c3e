package pod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// rootfsIDMap id-maps an app's rootfs for a pod with a user namespace.
type rootfsIDMap struct {
	userNS  string // the pod's pinned user namespace
	rootUID int    // host ids of the pod's root, owner of the upper dir
	rootGID int
}

// mountRootfs stacks an app's rootfs: the image's shared unpacked layers
// as read-only lower dirs (lowest first in layers) under the app's own
// upper dir. With idmap, every layer is seen through an id-mapped mount
// of the pod's user namespace, so the pod's root owns what host root owns
// in the shared layers, which stay untouched and shared with other pods.
func mountRootfs(layers []string, fsDir, target string, idmap *rootfsIDMap) error {
	upper, work := filepath.Join(fsDir, "upper"), filepath.Join(fsDir, "work")
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	lowers := slices.Clone(layers)
	slices.Reverse(lowers) // overlayfs lists the top layer first
	for _, l := range lowers {
		if strings.ContainsAny(l, ":,") {
			return fmt.Errorf("layer path %q cannot be an overlayfs lower dir", l)
		}
	}
	if idmap != nil {
		if err := os.Chown(upper, idmap.rootUID, idmap.rootGID); err != nil {
			return err
		}
		fds, err := idmappedLayers(lowers, idmap.userNS)
		// Overlayfs keeps private clones of its lower mounts: the detached
		// id-mapped trees can go as soon as it is mounted.
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		if err != nil {
			return err
		}
		// Attached, not as /proc/self/fd/N: overlayfs of Linux 6.1 (Debian
		// 12) refuses detached mounts as lower dirs with EINVAL (found by
		// the vmtest guest); attached ones work on every kernel.
		attached := filepath.Join(fsDir, "idmapped")
		defer detachLayers(attached)
		for i, fd := range fds {
			dir := filepath.Join(attached, strconv.Itoa(i))
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("attach id-mapped layer %s: %w", lowers[i], err)
			}
			lowers[i] = dir
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("image has too many layers (%d) for one overlayfs mount option page", len(layers))
	}
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount app rootfs at %s: %w", target, err)
	}
	return nil
}

// detachLayers unmounts and removes the attached id-mapped layers under
// dir: the overlay mount holds its own clones of them.
func detachLayers(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		d := filepath.Join(dir, e.Name())
		unix.Unmount(d, unix.MNT_DETACH)
		os.Remove(d) // never RemoveAll: a mount left there is a shared layer
	}
	os.Remove(dir)
}

// unmountRootfs undoes mountRootfs; not being mounted is fine.
func unmountRootfs(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}

// idmappedLayers returns detached id-mapped clones (open_tree fds) of the
// layer dirs, mapped through the user namespace pinned at userNS.
func idmappedLayers(layers []string, userNS string) ([]int, error) {
	ns, err := os.Open(userNS)
	if err != nil {
		return nil, fmt.Errorf("open the pod's user namespace: %w", err)
	}
	defer ns.Close()
	var fds []int
	for _, l := range layers {
		fd, err := unix.OpenTree(unix.AT_FDCWD, l, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fds, fmt.Errorf("clone layer %s: %w", l, err)
		}
		fds = append(fds, fd)
		// Read-only too: a lower dir needs no writes, and a clone that
		// stayed attached by mistake cannot be emptied through.
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY, Userns_fd: uint64(ns.Fd())}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return fds, fmt.Errorf("id-map layer %s (needs Linux 5.12 and a filesystem that supports id-mapped mounts): %w", l, err)
		}
	}
	return fds, nil
}
