package network

import (
	"net"
	"testing"
)

func TestHostIPsAreTheNodesGlobalAddresses(t *testing.T) {
	ips := HostIPs()
	if len(ips) == 0 {
		t.Skip("this host has no global unicast address")
	}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil || !ip.IsGlobalUnicast() {
			t.Fatalf("HostIPs() = %v: %q is not a global unicast address", ips, s)
		}
	}
}
