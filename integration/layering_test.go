package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering checks the dependency rule of docs/architecture.md: the
// stage1 binary, the tty layer and the spec generator are built without
// any stage0 package, so stage1 can ship and be versioned on its own.
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../tty/...", "../stage1-runc/...", "../spec/...", "../cmd/stage1-runc").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/runclet/runclet/runtime") || strings.HasPrefix(p, "github.com/runclet/runclet/cri") {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("stage1, tty and spec must not depend on stage0 packages; found %v", bad)
	}
	if !strings.Contains(string(out), "github.com/runclet/runclet/internal/errdefs") {
		t.Fatalf("go list output does not name internal/errdefs; is the test listing the right packages?\n%s", out)
	}
}
