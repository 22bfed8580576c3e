package supervisor

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/runclet/runclet/internal/testutil"
)

func TestSignalStateDropped(t *testing.T) {
	for _, c := range []struct {
		st   signalState
		want bool
	}{
		{signalState{}, false},                                         // not an init: the kernel delivers
		{signalState{nsInit: true}, true},                              // init without a handler
		{signalState{nsInit: true, caught: true}, false},               // init that handles it
		{signalState{nsInit: true, caught: true, preExec: true}, true}, // libcontainer's init, not the app yet
		{signalState{preExec: true}, false},
	} {
		if got := c.st.dropped(); got != c.want {
			t.Errorf("%+v: dropped %v, want %v", c.st, got, c.want)
		}
	}
}

// This test process is no pid namespace's init, and the Go runtime
// catches SIGTERM but nobody catches SIGKILL.
func TestProcSignalStateOfThisProcess(t *testing.T) {
	st, err := procSignalState(os.Getpid(), syscall.SIGTERM)
	if err != nil {
		t.Fatal(err)
	}
	if st.nsInit || st.preExec || !st.caught || st.dropped() {
		t.Fatalf("SIGTERM: %+v", st)
	}
	if st, _ := procSignalState(os.Getpid(), syscall.SIGKILL); st.caught {
		t.Fatalf("SIGKILL caught: %+v", st)
	}
	for _, sig := range []syscall.Signal{0, 65} {
		if st, _ := procSignalState(os.Getpid(), sig); st.caught {
			t.Fatalf("signal %d caught: %+v", sig, st)
		}
	}
	if _, err := procSignalState(1<<30, syscall.SIGTERM); err == nil {
		t.Fatal("a pid that cannot exist has a state")
	}
}

// startInit starts sh -c script as the init of a new pid namespace.
func startInit(t *testing.T, script string) *exec.Cmd {
	t.Helper()
	testutil.RequiresRoot(t, "a pid namespace")
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// waitState polls until ok says yes about pid's state for sig.
func waitState(t *testing.T, pid int, sig syscall.Signal, ok func(signalState) bool) signalState {
	t.Helper()
	var st signalState
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if st, err = procSignalState(pid, sig); err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
	}
	t.Fatalf("pid %d: state %+v", pid, st)
	return st
}

// An init that has no handler would lose SIGTERM; once it traps it, it
// would not; while it is named like libcontainer's init it still would.
func TestProcSignalStateOfAPidNamespaceInit(t *testing.T) {
	plain := startInit(t, "read x") // blocks on stdin, no handler
	st := waitState(t, plain.Process.Pid, syscall.SIGTERM, func(s signalState) bool { return s.nsInit })
	if st.caught || !st.dropped() {
		t.Fatalf("init without a handler: %+v", st)
	}

	flag := t.TempDir() + "/exec"
	// It renames itself like libcontainer's init when flag appears (only a
	// process itself may write its comm).
	trapping := startInit(t, "trap 'exit 0' TERM; while :; do [ -e "+flag+" ] && printf 'runc:[2:INIT]' >/proc/self/comm; sleep 0.02; done")
	st = waitState(t, trapping.Process.Pid, syscall.SIGTERM, func(s signalState) bool { return s.nsInit && s.caught })
	if st.dropped() || st.preExec {
		t.Fatalf("init that traps TERM: %+v", st)
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, trapping.Process.Pid, syscall.SIGTERM, func(s signalState) bool { return s.preExec })
	if !st.dropped() {
		t.Fatalf("libcontainer's init before exec: %+v", st)
	}
}
