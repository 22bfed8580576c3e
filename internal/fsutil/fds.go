package fsutil

import (
	"math"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloseInheritedOnExec marks every descriptor the process inherited
// beyond stdio close-on-exec, so that none of them (a careless parent's
// file, or a host directory: CVE-2024-21626) reaches the processes it
// starts: supervisors, CNI plugins, holders, apps. Call it first thing in
// main, before the process opens descriptors it means to pass on.
func CloseInheritedOnExec() {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	ents, _ := os.ReadDir("/proc/self/fd") // before Linux 5.11
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
