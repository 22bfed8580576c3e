package supervisor

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The process that holds a pod's shared pid namespace is that
// namespace's pid 1, so every app of the pod can reach it: signal it, and
// with CAP_SYS_PTRACE read /proc/1/root, /proc/1/exe and its memory. It
// must therefore hold nothing: becomeHolder turns the Go process started
// as `pidns-init` (or `ns-holder --pid-ns`) into a tiny static program
// that
//
//   - has a private mount namespace whose root is an empty read-only
//     tmpfs holding only that program (/proc/1/root shows nothing of the
//     host, and /proc/1/exe is a file of that read-only tmpfs, not the
//     host's stage1-runc binary);
//   - has no capabilities (empty bounding, inheritable and ambient sets,
//     so the exec grants none even to uid 0) and no_new_privs;
//   - runs under a seccomp filter that allows little more than pause;
//   - ignores every signal, SIGCHLD included, so that the kernel reaps
//     the orphans reparented to it and an app's `kill -TERM 1` (or any
//     other signal) does nothing: from inside its namespace only SIG_IGN
//     or a handler could be reached, and there is no handler;
//   - holds no file descriptor.
//
// Its resident size is a few KB instead of a Go runtime's megabytes. Only
// a signal from outside the namespace (stage0's or the supervisor's
// SIGKILL) ends it.

// holderRootCandidates are existing directories the empty tmpfs is
// mounted on, in the holder's private mount namespace only, before it
// becomes the root.
var holderRootCandidates = []string{"/tmp", "/mnt", "/run", "/var/tmp", "/proc"}

// becomeHolder does not return on success. ready is called once the new
// root is in place, just before the exec; what it writes to descriptors
// is flushed by then (they close at the exec). On failure it returns an
// error and the process is unchanged apart from its mount namespace.
func becomeHolder(argv []string, ready func() error) error {
	code := holderProgram()
	if code == nil {
		return fmt.Errorf("no holder program for %s", runtime.GOARCH)
	}
	filter := holderFilter()
	// Namespaces, root and capabilities below are this thread's; the exec
	// at the end runs from it, so the new program inherits them.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("holder: unshare the mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("holder: make mounts private: %w", err)
	}
	var dir string
	var err error
	for _, d := range holderRootCandidates {
		if err = unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=16k,nr_inodes=8,mode=0555"); err == nil {
			dir = d
			break
		}
	}
	if dir == "" {
		return fmt.Errorf("holder: mount an empty tmpfs: %w", err)
	}
	if err := os.WriteFile(dir+"/init", code, 0o555); err != nil {
		return fmt.Errorf("holder: write its program: %w", err)
	}
	if err := unix.Chdir(dir); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("holder: pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("holder: detach the host's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("holder: make its root read-only: %w", err)
	}
	if err := ready(); err != nil {
		return err
	}
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if err := ignoreSignal(sig); err != nil {
			return fmt.Errorf("holder: ignore signal %d: %w", sig, err)
		}
	}
	// Its stack is all the memory the program could grow (a tracer may
	// move its stack pointer): keep it small.
	if err := unix.Setrlimit(unix.RLIMIT_STACK, &unix.Rlimit{Cur: holderStackLimit, Max: holderStackLimit}); err != nil {
		return fmt.Errorf("holder: limit its stack: %w", err)
	}
	if err := dropCapabilities(); err != nil {
		return err
	}
	path, err := unix.BytePtrFromString("/init")
	if err != nil {
		return err
	}
	args := make([]*byte, 0, len(argv)+1)
	for _, a := range argv {
		p, err := unix.BytePtrFromString(a)
		if err != nil {
			return err
		}
		args = append(args, p)
	}
	args = append(args, nil)
	env := []*byte{nil}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// From here on only raw system calls: the filter is this thread's and
	// allows almost nothing. Every descriptor (stdio included: stage0's
	// stderr, the readiness pipe) closes at the exec.
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE_RANGE, 0, ^uintptr(0), unix.CLOSE_RANGE_CLOEXEC); e != 0 {
		return fmt.Errorf("holder: close_range: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("holder: install its seccomp filter: %w", e)
	}
	_, _, e := unix.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&args[0])), uintptr(unsafe.Pointer(&env[0])))
	runtime.KeepAlive(args)
	runtime.KeepAlive(env)
	runtime.KeepAlive(filter)
	// Past the filter and with no capabilities, nothing is left to fall
	// back to: the caller exits, and the pod's pid namespace with it.
	return fmt.Errorf("holder: exec: %w", e)
}

// ignoreSignal sets sig to SIG_IGN with rt_sigaction directly: the Go
// runtime refuses to ignore the signals it keeps for itself (SIGSEGV,
// SIGILL, ...), and would crash on them when they come from kill(2).
func ignoreSignal(sig int) error {
	// struct sigaction as the kernel takes it: handler, flags, restorer,
	// mask (amd64 and arm64 alike).
	var sa struct {
		handler  uintptr
		flags    uint64
		restorer uintptr
		mask     uint64
	}
	sa.handler = 1 // SIG_IGN
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 && e != unix.EINVAL {
		return e
	}
	return nil
}

// dropCapabilities empties this thread's bounding, ambient, inheritable,
// permitted and effective sets and sets no_new_privs: the exec that
// follows then grants no capability, even to uid 0.
func dropCapabilities() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("holder: no_new_privs: %w", err)
	}
	for c := 0; c < 64; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) { // past the last capability
				break
			}
			return fmt.Errorf("holder: drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("holder: clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("holder: capset: %w", err)
	}
	return nil
}

// holderFilter is the holder's seccomp filter: its program needs only
// pause (or ppoll) and exit; execve is there for the exec that starts it
// (from a read-only root that holds nothing else). Nothing else runs on
// this thread between the filter and the exec: raw system calls on data
// made beforehand, every signal ignored. Without mmap, brk or clone a
// process that ptraces the holder cannot make it allocate or fork outside
// the pod's cgroup. A foreign architecture kills the process; any other
// call fails with EPERM.
func holderFilter() []unix.SockFilter {
	allowed := holderSyscalls()
	n := len(allowed)
	f := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 4}, // seccomp_data.arch
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: holderAuditArch, Jt: 0, Jf: uint8(n + 3)},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
	}
	for i, nr := range allowed {
		f = append(f, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(nr), Jt: uint8(n - i), Jf: 0})
	}
	return append(f,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_KILL_PROCESS},
	)
}

func holderSyscalls() []uintptr {
	return []uintptr{
		unix.SYS_EXECVE, unix.SYS_EXIT, unix.SYS_EXIT_GROUP, unix.SYS_RT_SIGRETURN, unix.SYS_RESTART_SYSCALL,
		holderSleepSyscall,
	}
}

// holderProgram is a static ELF executable of one loop: sleep until a
// signal, again. With every signal ignored that is forever.
func holderProgram() []byte {
	if holderCode == nil {
		return nil
	}
	const base = 0x400000
	const hdrs = 64 + 56
	total := uint64(hdrs + len(holderCode))
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(holderMachine), Version: uint32(elf.EV_CURRENT),
		Entry: base + hdrs, Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1, Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	p := elf.Prog64{
		Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X),
		Vaddr: base, Paddr: base, Filesz: total, Memsz: total, Align: 0x1000,
	}
	binary.Write(&b, binary.LittleEndian, &h)
	binary.Write(&b, binary.LittleEndian, &p)
	b.Write(holderCode)
	return b.Bytes()
}

// holderStackLimit is the holder program's RLIMIT_STACK.
const holderStackLimit = 128 << 10

// holderExitCode is what a holder that failed to become one exits with.
const holderExitCode = 70
