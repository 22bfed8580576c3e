package supervisor

import (
	"os"
	"os/signal"
	"syscall"
)

// signalNotify delivers SIGCHLD and ignores every other signal the Go
// runtime lets a program ignore (the Go holder only).
func signalNotify(c chan os.Signal) {
	for sig := syscall.Signal(1); sig <= 64; sig++ {
		if sig != syscall.SIGCHLD {
			signal.Ignore(sig)
		}
	}
	signal.Notify(c, syscall.SIGCHLD)
}
