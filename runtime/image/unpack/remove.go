package unpack

import (
	"os"

	"golang.org/x/sys/unix"
)

// removeAt removes name in dirfd (recursively for a directory) to make room
// for an entry that reuses the name.
func (x *extractor) removeAt(dirfd int, name string) error {
	x.invalidate()
	return removeAllAt(dirfd, name)
}

// removeAllAt is os.RemoveAll on a directory fd: it never follows a symlink
// and never resolves a path from the root again, so a symlink in the tree
// cannot point the deletion elsewhere.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return err
	}
	fd, err := openDirNoFollow(dirfd, name)
	if err != nil {
		return err
	}
	dir := os.NewFile(uintptr(fd), name)
	// Read everything before deleting: getdents while unlinking may skip
	// entries.
	names, err := dir.Readdirnames(-1)
	for _, n := range names {
		if err != nil {
			break
		}
		err = removeAllAt(fd, n)
	}
	dir.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}
