package pod

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/runclet/runclet/spec"
)

// Failpoints are a test hook: RUNCLET_FAILPOINT names a point in pod or
// app creation where the process kills itself with SIGKILL, as a crash
// there would, so tests can show that a restarted daemon cleans up what
// the crash left. The variable is read once, when the process starts;
// unset (always, outside tests) it does nothing. docs/cri.md lists the
// points.
const failpointEnv = "RUNCLET_FAILPOINT"

// The points.
const (
	// FailAfterNetworkSetup: CreatePod has pinned the pod's namespaces
	// and attached its network, and has not recorded the attachment.
	FailAfterNetworkSetup = "after-network-setup"
	// FailAfterRootfsMount: AddApp has recorded the app and mounted its
	// rootfs, and has not written its bundle or asked the supervisor.
	FailAfterRootfsMount = "after-rootfs-mount"
)

var failpoint = os.Getenv(failpointEnv)

// failAt kills this process if the failpoint named is armed.
func failAt(name string) {
	if failpoint != name {
		return
	}
	fmt.Fprintf(os.Stderr, "runclet: failpoint %s: killing myself (%s=%s)\n", name, failpointEnv, name)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	for {
		time.Sleep(time.Hour) // the signal may take a moment; never go on
	}
}

// writeBundle is spec.WriteBundle; rollback tests replace it to make an
// app's bundle write fail after its rootfs is mounted.
var writeBundle = spec.WriteBundle
