package unpack

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// openBeneath opens a cleaned relative path as a directory, letting the
// kernel guarantee the walk never leaves the root: RESOLVE_BENEATH rejects
// absolute symlinks and ".." above the root with EXDEV, and
// RESOLVE_NO_MAGICLINKS rejects /proc-style links with ELOOP. Symlinks that
// stay inside the root are followed.
func (x *extractor) openBeneath(name string, flags int) (int, error) {
	x.how = unix.OpenHow{
		Flags:   uint64(flags | unix.O_DIRECTORY | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 16 {
		fd, err := unix.Openat2(x.root, name, &x.how)
		// EAGAIN: a rename somewhere on the system raced a ".." step in a
		// symlink target; the kernel asks us to retry.
		if err != unix.EAGAIN && err != unix.EINTR {
			return fd, err
		}
	}
	return -1, unix.EAGAIN
}

// parentFD returns a directory fd for dir (a cleaned name, "" for the root),
// creating missing directories. The fd belongs to the cache: callers must not
// close it, and it stays valid until the next parentFD or dirFD call.
func (x *extractor) parentFD(entry, dir string) (int, error) {
	fd, err := x.dirFD(entry, dir, true)
	if errno, ok := err.(unix.Errno); ok {
		return -1, resolveErr(entry, dir, errno)
	}
	return fd, err
}

// dirFD is parentFD with the choice not to create, and bare errnos from the
// resolution itself (mkdirAll's errors already name entry).
func (x *extractor) dirFD(entry, dir string, create bool) (int, error) {
	if dir == "" {
		return x.root, nil
	}
	if x.cache.valid && x.cache.path == dir {
		return x.cache.fd, nil
	}
	fd, err := x.openBeneath(dir, unix.O_PATH)
	if err == unix.ENOENT && create {
		fd, err = x.mkdirAll(entry, dir)
	}
	if err != nil {
		return -1, err
	}
	x.setCache(dir, fd)
	return fd, nil
}

func (x *extractor) setCache(dir string, fd int) {
	if x.cache.fd >= 0 {
		unix.Close(x.cache.fd)
	}
	x.cache.path, x.cache.fd, x.cache.valid = dir, fd, true
}

// invalidate forgets the cached path after anything was removed: the removed
// name may have been (a symlink on the way to) the cached directory. The fd
// stays open because the caller may be using it right now.
func (x *extractor) invalidate() { x.cache.valid = false }

// lookupDir resolves an existing directory without creating anything and
// without touching the cache, for when the cached fd is in use. The release
// func closes the fd unless it is the root or the cache's.
func (x *extractor) lookupDir(dir string) (int, func(), error) {
	if dir == "" || (x.cache.valid && x.cache.path == dir) {
		fd, err := x.dirFD("", dir, false)
		return fd, func() {}, err
	}
	fd, err := x.openBeneath(dir, unix.O_PATH)
	if err != nil {
		return -1, nil, err
	}
	return fd, func() { unix.Close(fd) }, nil
}

// mkdirAll creates the missing directories of dir, one component at a time,
// each opened through openBeneath again from the root so a symlink met on
// the way is judged against the root, not against its own parent.
func (x *extractor) mkdirAll(entry, dir string) (int, error) {
	parent := x.root
	for end := 0; end < len(dir); end++ {
		start := end
		for end < len(dir) && dir[end] != '/' {
			end++
		}
		prefix := dir[:end]
		fd, err := x.openBeneath(prefix, unix.O_PATH)
		if err == unix.ENOENT {
			if err = x.mkdirImplied(parent, dir[start:end]); err == nil {
				fd, err = x.openBeneath(prefix, unix.O_PATH)
			} else {
				err = entryErr(entry, fmt.Sprintf("create parent %q", prefix), err)
			}
		}
		if parent != x.root {
			unix.Close(parent)
		}
		if err != nil {
			if _, ok := err.(unix.Errno); ok {
				err = resolveErr(entry, prefix, err)
			}
			return -1, err
		}
		parent = fd
	}
	return parent, nil
}

// mkdirImplied creates a directory the archive uses but does not list, with
// the ownership and mode tar and containerd give such directories.
func (x *extractor) mkdirImplied(parent int, name string) error {
	err := unix.Mkdirat(parent, name, 0o755)
	if err == unix.EEXIST {
		// A dangling symlink or a non-directory; the caller's open says which.
		return nil
	}
	if err != nil {
		return err
	}
	if !x.opts.NoChown {
		if err := unix.Fchownat(parent, name, 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	// The umask may have taken bits away.
	return chmodAt(parent, name, 0o755)
}

// resolveErr turns a failed resolution of dir into an error naming entry.
func resolveErr(entry, dir string, err error) error {
	switch err {
	case unix.EXDEV:
		return &EscapeError{Entry: entry, Reason: fmt.Sprintf("%q resolves through an absolute or climbing symlink", dir)}
	case unix.ELOOP:
		return &EscapeError{Entry: entry, Reason: fmt.Sprintf("%q resolves through a symlink loop or a magic link", dir)}
	case unix.ENOTDIR:
		return errdefs.InvalidArgument("unpack layer entry %q: %q is not a directory", entry, dir)
	case unix.ENOENT:
		return errdefs.InvalidArgument("unpack layer entry %q: %q does not exist (dangling symlink?)", entry, dir)
	}
	return entryErr(entry, fmt.Sprintf("open %q", dir), err)
}

// chmodAt sets the mode of a non-symlink without following a symlink: a
// plain fchmodat would. fchmodat2 (Linux 6.6) does this; on older kernels the
// name was created by us a moment ago and cannot have become a symlink.
func chmodAt(dirfd int, name string, mode uint32) error {
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
		err = unix.Fchmodat(dirfd, name, mode, 0)
	}
	return err
}
