//go:build !amd64 && !arm64

package supervisor

import "debug/elf"

// No holder program is written for this architecture: the Go holder
// stays (see PidnsInit).
const (
	holderMachine      = elf.EM_NONE
	holderAuditArch    = 0
	holderSleepSyscall = 0
)

var holderCode []byte
