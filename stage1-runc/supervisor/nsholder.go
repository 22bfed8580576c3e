package supervisor

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// NSHolder is `stage1-runc ns-holder HOSTNAME`. Stage0 starts it in a new
// user namespace with the pod's id mappings and new net, uts and ipc
// namespaces, so that those belong to the pod's user namespace (a
// multi-threaded Go process cannot enter a user namespace to create
// them itself). It sets the pod's hostname, says "ready" on stdout and
// waits for stdin to close; stage0 pins the namespaces meanwhile, so they
// outlive it.
//
// With --pid-ns it was also made the init of a new pid namespace for a
// pod whose apps share one: it then stays, detached, reaping orphans like
// pidns-init, until stage0 kills it when the pod goes.
func NSHolder(args []string) int {
	holdPidNS := len(args) == 2 && args[0] == "--pid-ns"
	if holdPidNS {
		args = args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: stage1-runc ns-holder [--pid-ns] HOSTNAME")
		return 2
	}
	if err := unix.Sethostname([]byte(args[0])); err != nil {
		fmt.Fprintf(os.Stderr, "ns-holder: sethostname %q: %v\n", args[0], err)
		return 1
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		return 1
	}
	if holdPidNS {
		os.Stdout.Close()
		PidnsInit()
	}
	io.Copy(io.Discard, os.Stdin)
	return 0
}
