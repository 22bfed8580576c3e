package pod

import (
	"strings"
	"testing"
)

// kubelet passes a pod's name as its hostname, and pod names may have
// dots; the kernel takes 64 bytes.
func TestCheckHostname(t *testing.T) {
	for _, h := range []string{"web", "dotted.pod.name", "127.0.0.1", "Node-1.Example.com", strings.Repeat("a", 64)} {
		if err := checkHostname(h); err != nil {
			t.Errorf("checkHostname(%q) = %v", h, err)
		}
	}
	for _, h := range []string{"", "-web", "a..b", "a b", "a/b", strings.Repeat("a", 65), "under_score"} {
		if err := checkHostname(h); err == nil {
			t.Errorf("checkHostname(%q) accepted", h)
		}
	}
}
