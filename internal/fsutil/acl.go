package fsutil

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// POSIX ACL xattr format (linux/posix_acl_xattr.h): a little-endian
// version word, then entries of tag, permission and id, sorted by tag
// and, for named entries, by id.
const (
	aclVersion  = 2
	aclUserObj  = 0x01
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
	aclXattr    = "system.posix_acl_access"
)

// ErrNoACL says the filesystem cannot hold POSIX ACLs.
var ErrNoACL = errors.New("the filesystem does not support POSIX ACLs")

// PrivateDir makes dir (which must be a directory, not a symlink) private
// to its owner: mode 0700, except that each group in searchers may search
// it (pass through, not list) by a POSIX ACL entry "group:<gid>:--x".
// The owning group and everyone else get nothing. With no searchers any
// ACL is dropped and the mode is exactly 0700. It is how a tree shared by
// many user-namespaced pods lets each pod's root reach its own bundle
// without opening the tree to every host user. Callers serialise changes
// to one dir (the entries are replaced as a whole).
func PrivateDir(dir string, searchers []uint32) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("private dir %s: %w", dir, err)
	}
	defer unix.Close(fd)
	// chmod first: on a dir with an ACL it sets the mask, and with no
	// searchers it is the whole answer.
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("private dir %s: %w", dir, err)
	}
	if len(searchers) == 0 {
		err := unix.Fremovexattr(fd, aclXattr)
		if err == nil || errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil
		}
		return fmt.Errorf("private dir %s: drop ACL: %w", dir, err)
	}
	if err := unix.Fsetxattr(fd, aclXattr, traverseACL(searchers), 0); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("private dir %s: %w", dir, ErrNoACL)
		}
		return fmt.Errorf("private dir %s: set ACL: %w", dir, err)
	}
	return nil
}

// traverseACL is owner rwx, the given groups --x (the mask), nothing else.
func traverseACL(gids []uint32) []byte {
	gids = slices.Clone(gids)
	slices.Sort(gids)
	gids = slices.Compact(gids)
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	entry := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	entry(aclUserObj, 7, aclNoID)
	entry(aclGroupObj, 0, aclNoID)
	for _, g := range gids {
		entry(aclGroup, 1, g)
	}
	entry(aclMask, 1, aclNoID)
	entry(aclOther, 0, aclNoID)
	return b
}

// ACLGroups returns the groups a dir's access ACL names, with their
// permission bits (r=4, w=2, x=1); none when it has no ACL.
func ACLGroups(dir string) (map[uint32]uint16, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(dir, aclXattr, buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ACL of %s: %w", dir, err)
	}
	buf = buf[:n]
	if len(buf) < 4 || (len(buf)-4)%8 != 0 || binary.LittleEndian.Uint32(buf) != aclVersion {
		return nil, fmt.Errorf("read ACL of %s: malformed", dir)
	}
	out := map[uint32]uint16{}
	for e := buf[4:]; len(e) >= 8; e = e[8:] {
		if binary.LittleEndian.Uint16(e) == aclGroup {
			out[binary.LittleEndian.Uint32(e[4:])] = binary.LittleEndian.Uint16(e[2:])
		}
	}
	return out, nil
}

// ChmodNoFollow sets the mode of the file at path itself: a symlink
// there is an error (ELOOP), never followed to its target.
func ChmodNoFollow(path string, mode uint32) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("chmod %s: is a symlink: %w", path, unix.ELOOP)
	}
	// An O_PATH fd cannot fchmod; its /proc magic link names the inode.
	if err := unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}
