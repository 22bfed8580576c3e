package proto

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxSunPath is the usable length of a unix socket path (sun_path is 108
// bytes with the terminating NUL).
const maxSunPath = 107

// viaDirFD calls fn with a path naming the same socket that fits in
// sun_path: deep run roots (tests, nested data dirs) exceed it, so the
// socket's directory is opened and named through /proc/self/fd.
func viaDirFD(path string, fn func(string) error) error {
	if len(path) <= maxSunPath {
		return fn(path)
	}
	dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer dir.Close()
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path)))
}

// Listen listens on the unix socket at path, however long the path.
func Listen(path string) (net.Listener, error) {
	var ln net.Listener
	err := viaDirFD(path, func(p string) (err error) {
		ln, err = net.Listen("unix", p)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Closing the listener must not try to unlink the /proc alias.
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	return ln, nil
}

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var conn net.Conn
	err := viaDirFD(path, func(p string) (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", p)
		return err
	})
	return conn, err
}
