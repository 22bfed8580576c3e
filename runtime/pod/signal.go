package pod

import (
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

// parseSignal reads an image StopSignal: "SIGQUIT", "QUIT" or "3".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, errdefs.InvalidArgument("unknown signal %q", s)
}

func tryLock(path string) (*fsutil.Lock, error) { return fsutil.TryLockFile(path) }
