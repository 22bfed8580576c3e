package pod

import (
	"context"
	"syscall"

	"github.com/runclet/runclet/stage1-runc/proto"
)

// KillApp sends sig to an app's init through its pod's supervisor. It
// takes no pod lock and changes no record (the supervisor records the
// exit), so it works while a StopApp holding the lock waits out its
// timeout: a second Ctrl-C of a foreground `runclet run` uses it.
func (m *Manager) KillApp(ctx context.Context, podID, appID string, sig syscall.Signal) error {
	return m.call(ctx, podID, proto.MethodKillApp, proto.KillAppParams{Name: appID, Signal: int(sig)}, nil)
}
