package pod

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// stopSlice stops the systemd slice runclet made for a pod that brought
// no cgroup parent (runclet-<pod>.slice, systemd cgroup driver), and with
// it any scope a dead supervisor left in it. systemd creates the slice
// when the pod's first app scope needs it but keeps it after the scopes
// stop: without this every removed pod left an empty slice unit and its
// cgroup (found by the vmtest guest). A slice that is not loaded is fine.
// Removal is not a hot path, so this runs systemctl rather than linking a
// D-Bus client into stage0.
func stopSlice(ctx context.Context, name string) error {
	if !strings.HasSuffix(name, ".slice") || strings.ContainsAny(name, "/ ") {
		return fmt.Errorf("stopping pod slice %q: not a slice name", name)
	}
	out, err := exec.CommandContext(ctx, "systemctl", "stop", "--quiet", "--", name).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 5 { // not loaded
		return nil
	}
	if err != nil {
		return fmt.Errorf("stopping pod slice %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
