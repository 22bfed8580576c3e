package pod

import (
	"fmt"
	"os"
	"strings"
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

// RUNCLET_PAUSEPOINT names a point where the process sleeps (2 s, or
// the duration after a colon: "after-pod-dir:10s"), so a test can run
// another process (gc, a daemon starting) in that window. Unset (always,
// outside tests) it does nothing.
const pausepointEnv = "RUNCLET_PAUSEPOINT"

// PauseAfterPodDir: CreatePod has made the pod's directory under its ID
// and has not pinned namespaces or attached the network.
const PauseAfterPodDir = "after-pod-dir"

var pausepoint, pauseFor = func() (string, time.Duration) {
	name, d, _ := strings.Cut(os.Getenv(pausepointEnv), ":")
	if dur, err := time.ParseDuration(d); err == nil {
		return name, dur
	}
	return name, 2 * time.Second
}()

// pauseAt sleeps if the pause point named is armed.
func pauseAt(name string) {
	if pausepoint == name {
		fmt.Fprintf(os.Stderr, "runclet: pausepoint %s: sleeping %s\n", name, pauseFor)
		time.Sleep(pauseFor)
	}
}

// writeBundle is spec.WriteBundle; rollback tests replace it to make an
// app's bundle write fail after its rootfs is mounted.
var writeBundle = spec.WriteBundle
