package supervisor

import (
	"os"
	"os/signal"
	"syscall"
)

// signalNotify delivers SIGCHLD; as pid 1 of a namespace the holder
// ignores every other signal it has no handler for, as the kernel wants.
func signalNotify(c chan os.Signal) { signal.Notify(c, syscall.SIGCHLD) }
