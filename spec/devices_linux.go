package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// DeviceFromHost stats a device node on the host and returns it as a Device
// for App.Devices. containerPath "" means the host path; permissions "" means
// "rwm". A missing node is errdefs.NotFound, anything but a character or
// block device errdefs.InvalidArgument.
func DeviceFromHost(hostPath, containerPath, permissions string) (Device, error) {
	var st unix.Stat_t
	// Follow symlinks: /dev/disk/by-id/... names are links to the node.
	if err := unix.Stat(hostPath, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Device{}, errdefs.NotFound("device %s: %w", hostPath, fs.ErrNotExist)
		}
		return Device{}, fmt.Errorf("stat device %s: %w", hostPath, err)
	}
	d, ok := deviceFromStat(hostPath, &st)
	if !ok {
		return Device{}, errdefs.InvalidArgument("%s is not a device node", hostPath)
	}
	d.ContainerPath, d.Permissions = containerPath, permissions
	return d, nil
}

func deviceFromStat(hostPath string, st *unix.Stat_t) (Device, bool) {
	var t string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		t = "c"
	case unix.S_IFBLK:
		t = "b"
	default:
		return Device{}, false
	}
	return Device{
		HostPath: hostPath,
		Type:     t,
		Major:    int64(unix.Major(uint64(st.Rdev))),
		Minor:    int64(unix.Minor(uint64(st.Rdev))),
		FileMode: fs.FileMode(st.Mode & 0o777),
		UID:      st.Uid,
		GID:      st.Gid,
	}, true
}

// hostDeviceSkipDirs are parts of /dev that a privileged app gets from its
// own mounts (pts, shm, mqueue) or that only hold links and runtime state.
var hostDeviceSkipDirs = map[string]bool{
	"pts": true, "shm": true, "mqueue": true, "fd": true,
	".lxc": true, ".lxd-mounts": true, ".udev": true,
}

// HostDevices lists the device nodes below root (normally "/dev") for
// App.HostDevices. /dev/console is left out: it belongs to the host's
// terminal, and an app's console is its own pty.
func HostDevices(root string) ([]Device, error) {
	var out []Device
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrPermission) {
				return nil
			}
			return err
		}
		if e.IsDir() {
			if p != root && hostDeviceSkipDirs[e.Name()] {
				return filepath.SkipDir
			}
			return nil
		}
		if e.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 || e.Name() == "console" {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil // gone since the walk listed it
			}
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if d, ok := deviceFromStat(p, &st); ok {
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list host devices in %s: %w", root, err)
	}
	return out, nil
}
