package spec

import specs "github.com/opencontainers/runtime-spec/specs-go"

// The RuntimeDefault seccomp profile as data: an allow-list in the spirit of
// Docker's and containerd's default profiles. Anything not listed fails with
// EPERM. Syscalls that need a capability to be useful (mount, ptrace,
// reboot, ...) are allowed only when the app has that capability, so adding
// a capability keeps working under the default profile.
//
// runc skips syscall names its libseccomp does not know, so listing
// syscalls newer than the host kernel is harmless.

// Errno values used by the profile; literal so this file builds everywhere.
const (
	errnoEPERM  = 1
	errnoENOSYS = 38
)

// cloneNamespaceFlags is CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|
// CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET: without
// CAP_SYS_ADMIN an app may clone, but not into new namespaces.
const cloneNamespaceFlags = 0x7E020000

// seccompArches maps a GOARCH to the seccomp architectures a process of that
// kind may use: the native one and the compat ABIs the kernel also accepts
// (32-bit x86 and x32 on amd64, arm on arm64, ...).
var seccompArches = map[string][]specs.Arch{
	"amd64":    {specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
	"386":      {specs.ArchX86},
	"arm64":    {specs.ArchAARCH64, specs.ArchARM},
	"arm":      {specs.ArchARM},
	"mips64":   {specs.ArchMIPS64, specs.ArchMIPS, specs.ArchMIPS64N32},
	"mips64le": {specs.ArchMIPSEL64, specs.ArchMIPSEL, specs.ArchMIPSEL64N32},
	"ppc64le":  {specs.ArchPPC64LE},
	"s390x":    {specs.ArchS390X, specs.ArchS390},
	"riscv64":  {specs.ArchRISCV64},
	"loong64":  {specs.ArchLOONGARCH64},
}

// seccompRule is one entry of a profile and the conditions under which it is
// part of an app's filter.
type seccompRule struct {
	names  []string
	action specs.LinuxSeccompAction
	errno  uint // for ActErrno; 0 means the profile's default errno
	args   []specs.LinuxSeccompArg

	arches    []string // only on these GOARCHes (nil: all)
	notArches []string // never on these GOARCHes
	caps      []string // only when the app has all of these capabilities
	notCaps   []string // never when the app has any of these capabilities
}

// personalityRule allows personality(2) with exactly one persona value.
func personalityRule(persona uint64) seccompRule {
	return seccompRule{
		names:  []string{"personality"},
		action: specs.ActAllow,
		args:   []specs.LinuxSeccompArg{{Index: 0, Value: persona, Op: specs.OpEqualTo}},
	}
}

// allowIfCap allows names only for apps that hold capability c.
func allowIfCap(c string, names ...string) seccompRule {
	return seccompRule{names: names, action: specs.ActAllow, caps: []string{c}}
}

// allowOnArch allows names only on the given GOARCHes.
func allowOnArch(arches []string, names ...string) seccompRule {
	return seccompRule{names: names, action: specs.ActAllow, arches: arches}
}

// cloneWithoutNamespaces allows clone(2) unless its flags argument (index 1
// on s390, whose argument order differs, 0 elsewhere) asks for a namespace.
func cloneWithoutNamespaces(index uint, arches, notArches []string) seccompRule {
	return seccompRule{
		names:     []string{"clone"},
		action:    specs.ActAllow,
		args:      []specs.LinuxSeccompArg{{Index: index, Value: cloneNamespaceFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}},
		arches:    arches,
		notArches: notArches,
		notCaps:   []string{"CAP_SYS_ADMIN"},
	}
}

// socketDomains are the address families socket(2) may create under
// RuntimeDefault. Literal values (checked against the kernel headers in
// seccomp_linux_test.go) so this file builds everywhere. Left out, as in
// moby's profile, whose allow-list this one stays within: families the
// kernel no longer implements, and families a workload container has no
// need for whose kernel code has a history of exploits or that cross the
// network namespace: AF_ALG (38, the kernel crypto API), AF_VSOCK (40,
// host/guest sockets not isolated by network namespaces), AF_KCM (41),
// AF_QIPCRTR (42), AF_SMC (43), AF_XDP (44), AF_MCTP (45). containerd 2.x
// blocks AF_ALG and AF_VSOCK. A pod that needs one of them uses a Localhost
// profile.
var socketDomains = []uint64{
	1,  // AF_UNIX
	2,  // AF_INET
	7,  // AF_BRIDGE
	8,  // AF_ATMPVC
	9,  // AF_X25
	10, // AF_INET6
	13, // AF_NETBEUI
	14, // AF_SECURITY
	15, // AF_KEY
	16, // AF_NETLINK
	17, // AF_PACKET
	18, // AF_ASH
	21, // AF_RDS
	22, // AF_SNA
	24, // AF_PPPOX
	26, // AF_LLC
	27, // AF_IB
	28, // AF_MPLS
	29, // AF_CAN
	30, // AF_TIPC
	31, // AF_BLUETOOTH
	32, // AF_IUCV
	33, // AF_RXRPC
	35, // AF_PHONET
	36, // AF_IEEE802154
	39, // AF_NFC
}

// socketDomainRules allows socket(2) for each of socketDomains, one rule per
// family: the conditions of one rule must all hold, and runc splits several
// conditions on one argument into alternatives, so neither a list nor a
// range fits in a single rule.
func socketDomainRules() []seccompRule {
	var rules []seccompRule
	for _, d := range socketDomains {
		rules = append(rules, seccompRule{
			names:  []string{"socket"},
			action: specs.ActAllow,
			args:   []specs.LinuxSeccompArg{{Index: 0, Value: d, Op: specs.OpEqualTo}},
		})
	}
	return rules
}

// s390Arches are the GOARCHes where clone's flags are the second argument.
var s390Arches = []string{"s390x"}

// runtimeDefaultRules is the RuntimeDefault profile: the allow-list, then
// socket(2) for the address families in socketDomains (the socketcall(2)
// multiplexer of 32-bit ABIs hides its arguments from seccomp and stays
// allowed, as in containerd and moby).
var runtimeDefaultRules = append(runtimeDefaultBase, socketDomainRules()...)

// runtimeDefaultBase is the profile without its socket(2) rules. io_uring
// is not allowed: its operations bypass the syscall filter (and the LSM
// hooks of the syscalls they stand for), and it has been the source of many
// kernel exploits; containerd (PR 9320) and moby (PR 46762) removed it too.
var runtimeDefaultBase = []seccompRule{
	{action: specs.ActAllow, names: []string{
		"accept", "accept4", "access", "adjtimex", "alarm",
		"bind", "brk",
		"cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32",
		"clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
		"clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
		"close", "close_range", "connect", "copy_file_range", "creat",
		"dup", "dup2", "dup3",
		"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
		"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
		"execve", "execveat", "exit", "exit_group",
		"faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
		"fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
		"fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
		"fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64",
		"fsync", "ftruncate", "ftruncate64",
		"futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
		"futimesat",
		"get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents", "getdents64",
		"getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
		"getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
		"getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32",
		"getresuid", "getresuid32", "getrlimit", "getrusage", "getsid", "getsockname",
		"getsockopt", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat",
		"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
		"io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
		"io_setup", "io_submit",
		"ioctl", "ioprio_get", "ioprio_set", "ipc",
		"kill",
		"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
		"lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listmount", "listxattr",
		"listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
		"madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
		"mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall",
		"mmap", "mmap2", "mprotect",
		"mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
		"mq_timedsend", "mq_timedsend_time64", "mq_unlink",
		"mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync",
		"munlock", "munlockall", "munmap",
		"name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
		"open", "openat", "openat2",
		"pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
		"pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64",
		"prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
		"process_vm_readv", "process_vm_writev",
		"pselect6", "pselect6_time64", "ptrace", "pwrite64", "pwritev", "pwritev2",
		"read", "readahead", "readlink", "readlinkat", "readv",
		"recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
		"remap_file_pages", "removexattr", "removexattrat", "rename", "renameat", "renameat2",
		"restart_syscall", "rmdir", "rseq",
		"rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
		"rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
		"sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
		"sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
		"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
		"sched_setparam", "sched_setscheduler", "sched_yield",
		"seccomp", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64",
		"send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
		"set_robust_list", "set_thread_area", "set_tid_address",
		"setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
		"setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
		"setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
		"setreuid", "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32",
		"setxattr", "setxattrat",
		"shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack",
		"signalfd", "signalfd4", "sigprocmask", "sigreturn",
		"socketcall", "socketpair", "splice",
		"stat", "stat64", "statfs", "statfs64", "statmount", "statx",
		"symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
		"tee", "tgkill", "time",
		"timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
		"timer_settime", "timer_settime64",
		"timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
		"timerfd_settime64", "times", "tkill", "truncate", "truncate64",
		"ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe",
		"utime", "utimensat", "utimensat_time64", "utimes",
		"vfork", "vmsplice",
		"wait4", "waitid", "waitpid", "write", "writev",
	}},

	// personality(2): Linux, 32-bit Linux, UNAME26 on both, and the query
	// value; other personas (e.g. READ_IMPLIES_EXEC) weaken the process.
	personalityRule(0x0),
	personalityRule(0x8),
	personalityRule(0x20000),
	personalityRule(0x20008),
	personalityRule(0xffffffff),

	// Architecture-specific syscalls.
	allowOnArch([]string{"amd64"}, "arch_prctl"),
	allowOnArch([]string{"amd64", "386"}, "modify_ldt"),
	allowOnArch([]string{"arm", "arm64"},
		"arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls", "sync_file_range2"),
	allowOnArch([]string{"ppc64le"}, "swapcontext", "sync_file_range2"),
	allowOnArch([]string{"s390x"}, "s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
	allowOnArch([]string{"riscv64"}, "riscv_flush_icache"),

	// Syscalls that only a capability makes useful.
	allowIfCap("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
	allowIfCap("CAP_SYS_ADMIN",
		"bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
		"lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr",
		"mount", "mount_setattr", "move_mount", "open_tree",
		"perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname",
		"setns", "syslog", "umount", "umount2", "unshare"),
	allowIfCap("CAP_SYS_BOOT", "reboot"),
	allowIfCap("CAP_SYS_CHROOT", "chroot"),
	allowIfCap("CAP_SYS_MODULE", "delete_module", "finit_module", "init_module"),
	allowIfCap("CAP_SYS_PACCT", "acct"),
	allowIfCap("CAP_SYS_PTRACE", "kcmp", "pidfd_getfd", "process_madvise"),
	allowIfCap("CAP_SYS_RAWIO", "ioperm", "iopl"),
	allowIfCap("CAP_SYS_TIME", "clock_settime", "clock_settime64", "settimeofday", "stime"),
	allowIfCap("CAP_SYS_TTY_CONFIG", "vhangup"),
	allowIfCap("CAP_SYS_NICE", "get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
	allowIfCap("CAP_SYSLOG", "syslog"),
	allowIfCap("CAP_BPF", "bpf"),
	allowIfCap("CAP_PERFMON", "perf_event_open"),

	// Without CAP_SYS_ADMIN: clone without namespace flags, and clone3
	// (whose flags live in memory seccomp cannot inspect) fails with
	// ENOSYS so that libc falls back to clone.
	cloneWithoutNamespaces(0, nil, s390Arches),
	cloneWithoutNamespaces(1, s390Arches, nil),
	{names: []string{"clone3"}, action: specs.ActErrno, errno: errnoENOSYS, notCaps: []string{"CAP_SYS_ADMIN"}},
}
