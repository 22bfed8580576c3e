package unpack

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"io"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// entry extracts one tar entry. Every create below happens on the parent's
// fd with a call that does not follow a symlink in the final component, so
// nothing an earlier entry planted can redirect it.
func (x *extractor) entry(hdr *tar.Header, tr *tar.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // archive-wide PAX defaults; not a file
	}
	name, reason := cleanName(hdr.Name)
	if reason != "" {
		return &EscapeError{Entry: hdr.Name, Reason: reason}
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			// "./" heads archives made with `tar -C dir .`. The layer root
			// is the store's directory, so its entry is ignored, as
			// containerd and moby do.
			return nil
		}
		return &EscapeError{Entry: hdr.Name, Reason: "a non-directory would replace the layer root"}
	}
	dir, base := splitName(name)
	switch {
	case base == whiteoutOpaque:
		return x.opaque(hdr, dir)
	case isFormatMeta(name):
		return nil // AUFS bookkeeping in old Docker layers
	case strings.HasPrefix(base, whiteoutPrefix):
		return x.whiteout(hdr, dir, base[len(whiteoutPrefix):])
	}
	pfd, err := x.parentFD(hdr.Name, dir)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		// The reader expands sparse files; "contiguous" files are regular
		// files to every extractor that ever existed.
		return x.regular(hdr, tr, pfd, base)
	case tar.TypeDir:
		return x.directory(hdr, pfd, base, name)
	case tar.TypeSymlink:
		return x.symlink(hdr, pfd, base)
	case tar.TypeLink:
		return x.hardlink(hdr, pfd, base, name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return x.node(hdr, pfd, base)
	}
	return errdefs.InvalidArgument("unpack layer entry %q: unsupported tar entry type %q", hdr.Name, hdr.Typeflag)
}

// createAt runs mk and, if the name is taken, removes what is there and runs
// mk again: tar streams may repeat a name, and the later entry wins. mk must
// fail with EEXIST rather than reuse or follow what exists.
func (x *extractor) createAt(pfd int, name string, mk func() error) error {
	err := mk()
	if err != unix.EEXIST {
		return err
	}
	if err := x.removeAt(pfd, name); err != nil {
		return err
	}
	return mk()
}

func (x *extractor) regular(hdr *tar.Header, r io.Reader, pfd int, base string) error {
	fd := -1
	err := x.createAt(pfd, base, func() (err error) {
		// O_EXCL: never open (and so never write through) an existing inode,
		// be it a symlink, a hardlink shared with another name or a device.
		fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return entryErr(hdr.Name, "create file", err)
	}
	err = x.fillFile(hdr, r, fd)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = entryErr(hdr.Name, "close", cerr)
	}
	return err
}

func (x *extractor) fillFile(hdr *tar.Header, r io.Reader, fd int) error {
	if err := x.copyTo(hdr.Name, fd, r); err != nil {
		return err
	}
	return x.metaFD(hdr, fd)
}

// holeBlock is the unit of hole detection: an aligned block of this many
// zero bytes is skipped rather than written. 4 KiB is the page size and the
// block size of the usual filesystems, so a smaller hole would save nothing.
const holeBlock = 4 << 10

var zeroBlock [holeBlock]byte

// copyTo writes r into fd, a new empty file, keeping it sparse: every
// aligned holeBlock of zeros is skipped instead of written, and the file is
// extended to its full length at the end. Image layers rarely store sparse
// files as such (archive/tar expands GNU sparse entries on read and most
// builders write them dense), so a 10 GiB file of mostly zeros would
// otherwise cost 10 GiB of disk. It writes with pwrite(2) from the pooled
// buffer: io.Copy into an *os.File would take the ReadFrom path and
// allocate a buffer per file.
func (x *extractor) copyTo(entry string, fd int, r io.Reader) error {
	var off, end int64 // bytes read so far; end of the last byte written
	for {
		// Whole buffers keep every chunk block-aligned in the file.
		n, rerr := io.ReadFull(r, x.buf)
		if n > 0 {
			w, err := writeSparse(fd, x.buf[:n], off)
			if err != nil {
				return entryErr(entry, "write", err)
			}
			off += int64(n)
			if w >= 0 {
				end = off - int64(n) + w
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return entryErr(entry, "read", rerr)
		}
		if err := x.ctx.Err(); err != nil {
			return entryErr(entry, "write", err) // a huge file should not outlive a cancelled pull
		}
	}
	if end < off {
		// The file ends in a hole: give it its length.
		if err := unix.Ftruncate(fd, off); err != nil {
			return entryErr(entry, "truncate", err)
		}
	}
	return nil
}

// writeSparse writes b at file offset off (a multiple of holeBlock),
// skipping the full holeBlocks that are all zeros. It returns the end of
// the last byte it wrote, relative to b, or -1 if it wrote nothing.
func writeSparse(fd int, b []byte, off int64) (int64, error) {
	last := int64(-1)
	start := 0 // first byte not yet written or skipped
	for i := 0; i+holeBlock <= len(b); i += holeBlock {
		if !isZeroBlock(b[i : i+holeBlock]) {
			continue
		}
		if i > start {
			if err := pwriteAll(fd, b[start:i], off+int64(start)); err != nil {
				return last, err
			}
			last = int64(i)
		}
		start = i + holeBlock
	}
	if start < len(b) {
		if err := pwriteAll(fd, b[start:], off+int64(start)); err != nil {
			return last, err
		}
		last = int64(len(b))
	}
	return last, nil
}

// isZeroBlock reports whether a holeBlock is all zeros. Data blocks almost
// always differ in their first word, so they cost one load; the rest goes
// to the runtime's vectorised memequal.
func isZeroBlock(b []byte) bool {
	if binary.NativeEndian.Uint64(b) != 0 {
		return false
	}
	return bytes.Equal(b, zeroBlock[:])
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func (x *extractor) directory(hdr *tar.Header, pfd int, base, name string) error {
	fd, err := x.openDir(pfd, base)
	if err != nil {
		return entryErr(hdr.Name, "create directory", err)
	}
	defer unix.Close(fd)
	if err := x.metaFDNoTimes(hdr, fd); err != nil {
		return err
	}
	x.dirs = append(x.dirs, dirTimes{name: name, ts: times(hdr)})
	return nil
}

// openDir makes base a directory and opens it. A directory already there is
// kept with its contents (only the metadata is the new entry's); anything
// else is replaced.
func (x *extractor) openDir(pfd int, base string) (int, error) {
	// 0700 until the entry's mode is applied through the fd.
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
		return -1, err
	}
	fd, err := openDirNoFollow(pfd, base)
	if err != unix.ENOTDIR && err != unix.ELOOP {
		return fd, err
	}
	if err := x.removeAt(pfd, base); err != nil {
		return -1, err
	}
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
		return -1, err
	}
	return openDirNoFollow(pfd, base)
}

func openDirNoFollow(pfd int, base string) (int, error) {
	return unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func (x *extractor) symlink(hdr *tar.Header, pfd int, base string) error {
	// The target is stored verbatim, absolute or not: it is only ever
	// followed inside the container's root, never during extraction.
	err := x.createAt(pfd, base, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) })
	if err != nil {
		return entryErr(hdr.Name, "create symlink", err)
	}
	return x.metaAt(hdr, pfd, base, false)
}

func (x *extractor) node(hdr *tar.Header, pfd int, base string) error {
	var kind uint32
	switch hdr.Typeflag {
	case tar.TypeChar:
		kind = unix.S_IFCHR
	case tar.TypeBlock:
		kind = unix.S_IFBLK
	default:
		kind = unix.S_IFIFO
	}
	dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	err := x.createAt(pfd, base, func() error { return unix.Mknodat(pfd, base, kind|perm(hdr), dev) })
	if err != nil {
		return entryErr(hdr.Name, "create device node", err)
	}
	return x.metaAt(hdr, pfd, base, true)
}

// hardlink links name to an earlier entry. The target's directory is
// resolved beneath the root like any parent, and linkat without
// AT_SYMLINK_FOLLOW links a symlink itself rather than where it points, so
// the new name can only ever share an inode that lives in this layer.
func (x *extractor) hardlink(hdr *tar.Header, pfd int, base, name string) error {
	target, reason := cleanName(hdr.Linkname)
	if reason != "" {
		return &EscapeError{Entry: hdr.Name, Reason: "hardlink target " + strconv.Quote(hdr.Linkname) + ": " + reason}
	}
	if target == "." {
		return &EscapeError{Entry: hdr.Name, Reason: "hardlink to the layer root"}
	}
	if target == name {
		return nil // a name linked to itself is already what the entry asks for
	}
	tdir, tbase := splitName(target)
	tfd, release, err := x.lookupDir(tdir)
	if err == unix.ENOENT {
		return missingTarget(hdr)
	}
	if err != nil {
		return resolveErr(hdr.Name, tdir, err)
	}
	defer release()
	err = x.createAt(pfd, base, func() error { return unix.Linkat(tfd, tbase, pfd, base, 0) })
	if err == unix.ENOENT {
		return missingTarget(hdr)
	}
	if err != nil {
		return entryErr(hdr.Name, "link to "+strconv.Quote(hdr.Linkname), err)
	}
	// The inode, and so its metadata, is the target's.
	return nil
}

func missingTarget(hdr *tar.Header) error {
	return errdefs.InvalidArgument("unpack layer entry %q: hardlink target %q does not exist in this layer", hdr.Name, hdr.Linkname)
}
