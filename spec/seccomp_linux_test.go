package spec

import (
	"slices"
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

// The socket families spelled as literals are the kernel's, and the ones
// left out are those the profile's comment names.
func TestSocketDomainConstants(t *testing.T) {
	want := []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_BRIDGE, unix.AF_ATMPVC, unix.AF_X25, unix.AF_INET6,
		unix.AF_NETBEUI, unix.AF_SECURITY, unix.AF_KEY, unix.AF_NETLINK, unix.AF_PACKET, unix.AF_ASH,
		unix.AF_RDS, unix.AF_SNA, unix.AF_PPPOX, unix.AF_LLC, unix.AF_IB, unix.AF_MPLS, unix.AF_CAN,
		unix.AF_TIPC, unix.AF_BLUETOOTH, unix.AF_IUCV, unix.AF_RXRPC, unix.AF_PHONET, unix.AF_IEEE802154, unix.AF_NFC}
	if !slices.Equal(socketDomains, want) {
		t.Errorf("socketDomains = %v, want %v", socketDomains, want)
	}
	for _, blocked := range []uint64{unix.AF_ALG, unix.AF_VSOCK, unix.AF_KCM, unix.AF_QIPCRTR, unix.AF_SMC, unix.AF_XDP, unix.AF_MCTP} {
		if slices.Contains(socketDomains, blocked) {
			t.Errorf("family %d is allowed", blocked)
		}
	}
}
