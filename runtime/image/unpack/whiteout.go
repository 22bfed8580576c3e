package unpack

import (
	"archive/tar"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// whiteout turns `dir/.wh.NAME` into overlayfs' whiteout for dir/NAME: a
// 0:0 character device. The .wh. entry itself is never written.
func (x *extractor) whiteout(hdr *tar.Header, dir, target string) error {
	switch target {
	case "", ".":
		return errdefs.InvalidArgument("unpack layer entry %q: whiteout names no file", hdr.Name)
	case "..":
		return &EscapeError{Entry: hdr.Name, Reason: "whiteout of a parent directory: path traversal"}
	}
	pfd, err := x.parentFD(hdr.Name, dir)
	if err != nil {
		return err
	}
	err = x.createAt(pfd, target, func() error { return unix.Mknodat(pfd, target, unix.S_IFCHR, 0) })
	if err != nil {
		return entryErr(hdr.Name, "create whiteout", err)
	}
	if x.opts.NoChown {
		return nil
	}
	if err := unix.Fchownat(pfd, target, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(hdr.Name, "chown whiteout", err)
	}
	return nil
}

// opaque turns `dir/.wh..wh..opq` into trusted.overlay.opaque=y on dir, so
// the lowers below this layer contribute nothing to dir. The marker may come
// before dir's own entry, hence dir is created if missing; the later dir
// entry then only updates metadata and keeps the xattr.
func (x *extractor) opaque(hdr *tar.Header, dir string) error {
	pfd, err := x.parentFD(hdr.Name, dir)
	if err != nil {
		return err
	}
	// fsetxattr needs a real open; pfd is O_PATH. "." on it opens that very
	// directory with no further resolution.
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return entryErr(hdr.Name, "open opaque directory", err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		return entryErr(hdr.Name, "mark directory opaque", err)
	}
	return nil
}
