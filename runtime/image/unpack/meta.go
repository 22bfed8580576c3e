package unpack

import (
	"archive/tar"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// Metadata is applied in this order because each step can undo an earlier
// one: chown clears setuid/setgid bits and file capabilities, so the mode
// comes after it and security.capability after both; writing data bumps
// mtime, so times come last.

// metaFD applies ownership, mode, xattrs and times through an open fd.
func (x *extractor) metaFD(hdr *tar.Header, fd int) error {
	if err := x.metaFDNoTimes(hdr, fd); err != nil {
		return err
	}
	ts := times(hdr)
	if err := futimens(fd, &ts); err != nil {
		return entryErr(hdr.Name, "set times", err)
	}
	return nil
}

// futimens is utimensat(fd, NULL, ts, 0). x/sys only offers the path form,
// and an empty path with AT_EMPTY_PATH costs a kernel path lookup per file.
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// metaFDNoTimes is metaFD for directories, whose times must wait until
// their children exist.
func (x *extractor) metaFDNoTimes(hdr *tar.Header, fd int) error {
	if !x.opts.NoChown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return entryErr(hdr.Name, "chown", err)
		}
	}
	if err := unix.Fchmod(fd, perm(hdr)); err != nil {
		return entryErr(hdr.Name, "chmod", err)
	}
	return x.setXattrs(hdr, func(name string, value []byte) error {
		return unix.Fsetxattr(fd, name, value, 0)
	})
}

// metaAt applies metadata to base in pfd for inodes that cannot be opened
// safely (symlinks; devices and fifos, where open has side effects or
// blocks). Nothing here follows a symlink in base.
func (x *extractor) metaAt(hdr *tar.Header, pfd int, base string, chmod bool) error {
	if !x.opts.NoChown {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return entryErr(hdr.Name, "chown", err)
		}
	}
	if chmod {
		if err := chmodAt(pfd, base, perm(hdr)); err != nil {
			return entryErr(hdr.Name, "chmod", err)
		}
	}
	err := x.setXattrs(hdr, func(name string, value []byte) error {
		// The fd's magic link is only an intermediate step, pinned to the
		// parent we resolved; lsetxattr does not follow base itself.
		return unix.Lsetxattr(procPath(pfd, base), name, value, 0)
	})
	if err != nil {
		return err
	}
	ts := times(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(hdr.Name, "set times", err)
	}
	return nil
}

func procPath(fd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + base
}

const paxXattrPrefix = "SCHILY.xattr."

// setXattrs applies the entry's SCHILY.xattr.* PAX records with set.
func (x *extractor) setXattrs(hdr *tar.Header, set func(name string, value []byte) error) error {
	for key, value := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(key, paxXattrPrefix)
		if !ok {
			continue
		}
		// Layers express overlay state with .wh. entries. A raw
		// trusted.overlay.* xattr (redirect, metacopy, origin) would let a
		// layer steer the overlay mount itself.
		if strings.HasPrefix(name, "trusted.overlay.") {
			return errdefs.InvalidArgument("unpack layer entry %q: refusing overlayfs xattr %q", hdr.Name, name)
		}
		err := set(name, []byte(value))
		if err == unix.EOPNOTSUPP && strings.HasPrefix(name, "security.") {
			// security.selinux and friends on a host whose LSM or
			// filesystem does not take them: the host could not enforce
			// them anyway.
			slog.DebugContext(x.ctx, "layer xattr not supported here, skipped", "entry", hdr.Name, "xattr", name)
			continue
		}
		if err != nil {
			return entryErr(hdr.Name, fmt.Sprintf("set xattr %q", name), err)
		}
	}
	return nil
}

func perm(hdr *tar.Header) uint32 {
	// Permission bits plus setuid, setgid and sticky: tar's encoding of
	// these is the same as the kernel's.
	return uint32(hdr.Mode) & 0o7777
}

// times returns atime and mtime for utimensat. Plain ustar headers carry no
// atime; mtime stands in for it.
func times(hdr *tar.Header) [2]unix.Timespec {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return [2]unix.Timespec{
		{Sec: atime.Unix(), Nsec: int64(atime.Nanosecond())},
		{Sec: hdr.ModTime.Unix(), Nsec: int64(hdr.ModTime.Nanosecond())},
	}
}

// applyDirTimes stamps directories once nothing more will be created in
// them. A directory that a later entry removed or replaced is skipped: the
// name no longer refers to it.
func (x *extractor) applyDirTimes() error {
	for i := range x.dirs {
		d := &x.dirs[i]
		dir, base := splitName(d.name)
		pfd, err := x.dirFD(d.name, dir, false)
		if gone(err) {
			continue
		}
		if err != nil {
			return resolveErr(d.name, dir, err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if gone(err) {
			continue
		}
		if err != nil {
			return entryErr(d.name, "open to set times", err)
		}
		err = unix.UtimesNanoAt(fd, "", d.ts[:], unix.AT_EMPTY_PATH)
		unix.Close(fd)
		if err != nil {
			return entryErr(d.name, "set times", err)
		}
	}
	return nil
}

// gone reports a resolution error meaning the path now names something
// else: removed, or replaced by a non-directory or a symlink.
func gone(err error) bool {
	return err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP || err == unix.EXDEV
}
