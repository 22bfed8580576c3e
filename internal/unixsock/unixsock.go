// Package unixsock listens on and dials unix sockets whatever the length
// of their path: sun_path holds 107 bytes, and deep run roots (tests,
// nested data dirs) exceed it, so a longer path is reached through its
// directory opened and named under /proc/self/fd.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxSunPath is the usable length of a unix socket path (sun_path is 108
// bytes with its terminating NUL).
const maxSunPath = 107

// viaDirFD calls fn with a name for path that fits in sun_path: the path
// itself, or its directory opened and named through /proc/self/fd.
func viaDirFD(path string, fn func(string) error) error {
	if len(path) <= maxSunPath {
		return fn(path)
	}
	dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer dir.Close()
	alias := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	if len(alias) > maxSunPath {
		return errors.New("socket name too long even through /proc/self/fd: " + filepath.Base(path))
	}
	return fn(alias)
}

// Listen listens on the unix socket at path. Closing the listener does
// not remove the socket (it may have been bound through an alias): the
// caller removes it.
func Listen(path string) (net.Listener, error) {
	var ln net.Listener
	err := viaDirFD(path, func(p string) (err error) {
		ln, err = net.Listen("unix", p)
		return err
	})
	if err != nil {
		return nil, err
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	return ln, nil
}

// Dial connects to the unix socket at path.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	var conn net.Conn
	err := viaDirFD(path, func(p string) (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", p)
		return err
	})
	return conn, err
}
