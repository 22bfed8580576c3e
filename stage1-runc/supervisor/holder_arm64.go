package supervisor

import (
	"debug/elf"

	"golang.org/x/sys/unix"
)

const (
	holderMachine      = elf.EM_AARCH64
	holderAuditArch    = unix.AUDIT_ARCH_AARCH64
	holderSleepSyscall = unix.SYS_PPOLL
)

// holderCode: loop: ppoll(NULL, 0, NULL, NULL); b loop
var holderCode = []byte{
	0x00, 0x00, 0x80, 0xd2, // mov x0, #0
	0x01, 0x00, 0x80, 0xd2, // mov x1, #0
	0x02, 0x00, 0x80, 0xd2, // mov x2, #0
	0x03, 0x00, 0x80, 0xd2, // mov x3, #0
	0x28, 0x09, 0x80, 0xd2, // mov x8, #73 (ppoll)
	0x01, 0x00, 0x00, 0xd4, // svc #0
	0xfa, 0xff, 0xff, 0x17, // b -6 instructions
}
