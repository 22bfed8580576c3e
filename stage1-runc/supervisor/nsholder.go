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
// pod whose apps share one: it then becomes the holder program of
// holder.go, as pidns-init does (saying "ready" once its empty root is in
// place), and stays until stage0 kills it when the pod goes.
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
	sayReady := func() error {
		_, err := os.Stdout.WriteString("ready\n")
		return err
	}
	if holdPidNS {
		if holderCode == nil {
			if sayReady() != nil {
				return 1
			}
			os.Stdout.Close()
			goHolder()
		}
		err := becomeHolder(os.Args, sayReady)
		fmt.Fprintf(os.Stderr, "ns-holder: %v\n", err)
		return holderExitCode
	}
	if sayReady() != nil {
		return 1
	}
	io.Copy(io.Discard, os.Stdin)
	return 0
}
