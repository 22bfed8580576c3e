package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// cp copies between the host and a running app. Paths in the app are
// resolved in the app's own view (its mounts included) through
// /proc/PID/root with openat2(RESOLVE_IN_ROOT): "..", absolute and
// relative symlinks all stay inside the app's root, so a symlink the app
// made cannot send a copy to or from the host's files. Symlinks inside a
// copied tree are copied as symlinks, never followed.
func cpCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cp POD[:APP]:PATH HOSTPATH | HOSTPATH POD[:APP]:PATH",
		Short: "Copy files or directories between a running app and the host",
		Long: `Copy files or directories between a running app and the host.

The app's side is POD:PATH (the pod's only app) or POD:APP:PATH. A
directory is copied with its contents; when the destination is an
existing directory the source goes inside it under its own name. Modes
and modification times are kept; files written into the app belong to
root. The app's paths resolve in the app's own view (its volumes
included) and cannot leave it, whatever symlinks it holds.`,
		Example: "  runclet cp web:/etc/nginx/nginx.conf .\n  runclet cp ./site web:nginx:/usr/share/nginx/html",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			srcApp, srcPath, srcIn := splitCpArg(args[0])
			dstApp, dstPath, dstIn := splitCpArg(args[1])
			switch {
			case srcIn && dstIn:
				return errdefs.InvalidArgument("cp: copy between two apps through the host")
			case !srcIn && !dstIn:
				return errdefs.InvalidArgument("cp: one side must be POD[:APP]:PATH")
			}
			target, inPath := srcApp, srcPath
			if dstIn {
				target, inPath = dstApp, dstPath
			}
			p, a, err := resolveApp(cmd.Context(), m, target)
			if err != nil {
				return err
			}
			if err := runningApp(p, a); err != nil {
				return err
			}
			if !path.IsAbs(inPath) {
				inPath = "/" + inPath
			}
			root, err := unix.Open(fmt.Sprintf("/proc/%d/root", a.Pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("cp: the root of app %s: %w", a.Name, err)
			}
			defer unix.Close(root)
			if srcIn {
				return copyOut(root, inPath, dstPath)
			}
			return copyIn(srcPath, root, inPath)
		},
	}
}

// splitCpArg tells POD[:APP]:PATH from a host path: a host path is one
// that starts with / or . or has no colon.
func splitCpArg(s string) (target []string, p string, inApp bool) {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || !strings.Contains(s, ":") {
		return nil, s, false
	}
	parts := strings.SplitN(s, ":", 3)
	if len(parts) == 3 && !strings.HasPrefix(parts[1], "/") {
		return parts[:2], parts[2], true
	}
	return parts[:1], strings.Join(parts[1:], ":"), true
}

func openIn(root int, p string, flags uint64) (int, error) {
	fd, err := unix.Openat2(root, p, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return fd, nil
}

// copyOut copies PATH of the app to the host.
func copyOut(root int, src, dst string) error {
	// The source itself is followed when it is a symlink (inside the root).
	fd, err := openIn(root, src, unix.O_PATH)
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	defer unix.Close(fd)
	if st, err := os.Stat(dst); err == nil && st.IsDir() {
		dst = filepath.Join(dst, path.Base(src))
	}
	return copyFromFd(fd, dst)
}

func copyFromFd(fd int, dst string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	mode := os.FileMode(st.Mode & 0o7777)
	mtime := time.Unix(st.Mtim.Unix())
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		dir, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(dir), dst)
		names, err := f.Readdirnames(-1)
		if err != nil {
			f.Close()
			return err
		}
		for _, n := range names {
			if err := copyEntryOut(dir, n, filepath.Join(dst, n)); err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	case unix.S_IFREG:
		in, err := unix.Openat(fd, "", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			// O_PATH fds reopen through /proc/self/fd.
			in, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
		}
		src := os.NewFile(uintptr(in), "source")
		defer src.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
	default:
		return errdefs.InvalidArgument("cp: %s: only files, directories and symlinks are copied", dst)
	}
	if err := os.Chmod(dst, mode); err != nil {
		return err
	}
	return os.Chtimes(dst, mtime, mtime)
}

// copyEntryOut copies one directory entry without following a symlink.
func copyEntryOut(dir int, name, dst string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return err
		}
		os.Remove(dst)
		return os.Symlink(string(buf[:n]), dst)
	}
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return copyFromFd(fd, dst)
}

// copyIn copies a host file or directory to PATH in the app.
func copyIn(src string, root int, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	// An existing directory at dst receives src under its own name.
	parent, name := path.Dir(dst), path.Base(dst)
	if fd, err := openIn(root, dst, unix.O_PATH|unix.O_DIRECTORY); err == nil {
		unix.Close(fd)
		parent, name = dst, filepath.Base(src)
	}
	dir, err := openIn(root, parent, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("cp: the destination's directory: %w", err)
	}
	defer unix.Close(dir)
	return copyEntryIn(src, st, dir, name)
}

func copyEntryIn(src string, st os.FileInfo, dir int, name string) error {
	mtime := st.ModTime()
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		unix.Unlinkat(dir, name, 0)
		return unix.Symlinkat(target, dir, name)
	case st.IsDir():
		if err := unix.Mkdirat(dir, name, 0o700); err != nil && err != unix.EEXIST {
			return &os.PathError{Op: "mkdir", Path: name, Err: err}
		}
		sub, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: name, Err: err}
		}
		defer unix.Close(sub)
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			info, err := os.Lstat(filepath.Join(src, e.Name()))
			if err != nil {
				return err
			}
			if err := copyEntryIn(filepath.Join(src, e.Name()), info, sub, e.Name()); err != nil {
				return err
			}
		}
		if err := unix.Fchmod(sub, uint32(st.Mode().Perm())); err != nil {
			return err
		}
		return touchFd(sub, mtime)
	case st.Mode().IsRegular():
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		// O_NOFOLLOW: a symlink the app put at the name is not written through.
		fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return &os.PathError{Op: "create", Path: name, Err: err}
		}
		out := os.NewFile(uintptr(fd), name)
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Chmod(st.Mode().Perm()); err != nil {
			out.Close()
			return err
		}
		if err := touchFd(int(out.Fd()), mtime); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	return errdefs.InvalidArgument("cp: %s: only files, directories and symlinks are copied", src)
}

// touchFd sets a file's times through its descriptor (the /proc/self/fd
// magic link names exactly that file, whatever its path now is).
func touchFd(fd int, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return unix.UtimesNano(fmt.Sprintf("/proc/self/fd/%d", fd), ts)
}
