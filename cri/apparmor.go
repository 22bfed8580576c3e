package cri

import (
	"context"
	"sync"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/spec"
)

// appArmorDefault loads runclet's RuntimeDefault AppArmor profile the first
// time a container needs it (and again after a failure), so a daemon
// started before AppArmor's policy tools were installed recovers, and a
// host without AppArmor never runs the parser.
type appArmorDefault struct {
	mu     sync.Mutex
	loaded bool
	load   func(context.Context) error
}

// loadAppArmorDefault generates the profile for this host's policy
// directory and loads it with apparmor_parser.
func loadAppArmorDefault(ctx context.Context) error {
	text := spec.AppArmorProfile(spec.AppArmorDefaultProfile, spec.ProbeAppArmorHost("/etc/apparmor.d"))
	return spec.LoadAppArmorProfile(ctx, spec.ExecAppArmorRunner, text)
}

// ensure loads the profile unless that has been done.
func (a *appArmorDefault) ensure(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.loaded {
		return nil
	}
	if err := a.load(ctx); err != nil {
		return errdefs.FailedPrecondition("AppArmor is enabled, but runclet's default profile %s could not be loaded: %w", spec.AppArmorDefaultProfile, err)
	}
	logger(ctx).Info("loaded the RuntimeDefault AppArmor profile", "profile", spec.AppArmorDefaultProfile)
	a.loaded = true
	return nil
}
