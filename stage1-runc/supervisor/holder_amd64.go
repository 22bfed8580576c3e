package supervisor

import (
	"debug/elf"

	"golang.org/x/sys/unix"
)

const (
	holderMachine      = elf.EM_X86_64
	holderAuditArch    = unix.AUDIT_ARCH_X86_64
	holderSleepSyscall = unix.SYS_PAUSE
)

// holderCode: loop: mov eax, SYS_pause; syscall; jmp loop
var holderCode = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34
	0x0f, 0x05, // syscall
	0xeb, 0xf7, // jmp -9
}
