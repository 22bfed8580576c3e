package pod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// mountRootfs stacks an app's rootfs: the image's shared unpacked layers
// as read-only lower dirs (lowest first in layers) under the app's own
// upper dir.
func mountRootfs(layers []string, fsDir, target string) error {
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
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("image has too many layers (%d) for one overlayfs mount option page", len(layers))
	}
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount app rootfs at %s: %w", target, err)
	}
	return nil
}

// unmountRootfs undoes mountRootfs; not being mounted is fine.
func unmountRootfs(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}
