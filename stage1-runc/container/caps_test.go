package container

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	ocispec "github.com/runclet/runclet/spec"
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

// What the host does not allow is dropped from config.json too, so the
// bundle says what runs; a spec the host allows is left as it was.
func TestClampWritesTheBundleBack(t *testing.T) {
	bundle := t.TempDir()
	s := &specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "/rootfs"}, Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: []string{"CAP_CHOWN", "CAP_NO_SUCH_THING"}, Effective: []string{"CAP_NO_SUCH_THING"},
	}}}
	if err := ocispec.WriteBundle(bundle, s); err != nil {
		t.Fatal(err)
	}
	read, err := readSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if err := clamp(bundle, read); err != nil {
		t.Fatal(err)
	}
	back, err := ocispec.ReadBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if c := back.Process.Capabilities; slices.Contains(c.Bounding, "CAP_NO_SUCH_THING") || len(c.Effective) != 0 || !slices.Contains(c.Bounding, "CAP_CHOWN") {
		t.Fatalf("config.json after the clamp: %+v", c)
	}
	before, _ := os.Stat(filepath.Join(bundle, ocispec.ConfigName))
	if err := clamp(bundle, back); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(filepath.Join(bundle, ocispec.ConfigName)); !os.SameFile(before, after) {
		t.Fatal("config.json rewritten though nothing was clamped")
	}
}
