package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The kernel drops a signal sent from outside a pid namespace to that
// namespace's init unless the init has a handler for it. An app that is
// its own pid namespace's init and is told to stop right after it started
// (kubelet and critest do this) may not have installed its handler yet,
// or may not even have exec'd: the signal is lost and the app runs the
// whole grace period out before SIGKILL. procSignalState tells whether a
// signal sent now would be dropped, so stop can send it again once the
// app is ready to receive it.

// signalState is what /proc says about pid's ability to receive sig.
type signalState struct {
	nsInit  bool // pid is 1 in its innermost pid namespace
	caught  bool // sig is in SigCgt
	preExec bool // still libcontainer's init, not yet the app's program
}

// dropped reports whether a signal sent in this state is lost.
func (s signalState) dropped() bool { return s.nsInit && (!s.caught || s.preExec) }

func procSignalState(pid int, sig syscall.Signal) (signalState, error) {
	var st signalState
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := strings.Fields(string(v))
		switch string(k) {
		case "Name":
			// libcontainer's nsexec names the pre-exec init runc:[2:INIT].
			st.preExec = len(f) > 0 && strings.HasPrefix(f[0], "runc:[")
		case "NSpid":
			st.nsInit = len(f) > 1 && f[len(f)-1] == "1"
		case "SigCgt":
			if len(f) == 1 {
				mask, err := strconv.ParseUint(f[0], 16, 64)
				if err != nil {
					return st, fmt.Errorf("/proc/%d/status: SigCgt %q: %w", pid, f[0], err)
				}
				st.caught = sig >= 1 && sig <= 64 && mask&(1<<(uint(sig)-1)) != 0
			}
		}
	}
	return st, nil
}
