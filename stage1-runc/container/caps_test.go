package container

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestClampCapabilitiesKeepsOnlyTheBoundingSet(t *testing.T) {
	bound := boundingSet()
	if bound == nil {
		t.Fatal("cannot read this process's bounding set")
	}
	p := &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding:  []string{"CAP_CHOWN", "CAP_NO_SUCH_THING"},
		Effective: []string{"CAP_CHOWN", "CAP_NO_SUCH_THING"},
		Permitted: []string{"CAP_CHOWN"},
	}}
	clampCapabilities(p)
	if slices.Contains(p.Capabilities.Bounding, "CAP_NO_SUCH_THING") || slices.Contains(p.Capabilities.Effective, "CAP_NO_SUCH_THING") {
		t.Fatalf("a capability outside the bounding set was kept: %+v", p.Capabilities)
	}
	if bound["CAP_CHOWN"] && !slices.Contains(p.Capabilities.Bounding, "CAP_CHOWN") {
		t.Fatalf("a capability inside the bounding set was dropped: %+v", p.Capabilities)
	}
}
