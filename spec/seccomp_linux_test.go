package spec

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The profile spells kernel constants as literals so it builds on every OS;
// check them against the kernel headers where we have them.
func TestSeccompConstants(t *testing.T) {
	if errnoEPERM != int(unix.EPERM) || errnoENOSYS != int(unix.ENOSYS) {
		t.Errorf("errno constants are wrong")
	}
	want := unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET
	if cloneNamespaceFlags != want {
		t.Errorf("cloneNamespaceFlags = %#x, want %#x", cloneNamespaceFlags, want)
	}
}
