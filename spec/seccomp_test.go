package spec

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// rulesFor returns the profile's entries that name syscall.
func rulesFor(p *specs.LinuxSeccomp, syscall string) []specs.LinuxSyscall {
	var out []specs.LinuxSyscall
	for _, sc := range p.Syscalls {
		if slices.Contains(sc.Names, syscall) {
			out = append(out, sc)
		}
	}
	return out
}

// allowedPlain reports whether syscall is allowed without argument filters.
func allowedPlain(p *specs.LinuxSeccomp, syscall string) bool {
	return slices.ContainsFunc(rulesFor(p, syscall), func(sc specs.LinuxSyscall) bool {
		return sc.Action == specs.ActAllow && len(sc.Args) == 0
	})
}

func TestSeccompKinds(t *testing.T) {
	dir := t.TempDir()
	local := filepath.Join(dir, "profile.json")
	if err := os.WriteFile(local, []byte(`{"defaultAction":"SCMP_ACT_LOG"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		app    App
		want   specs.LinuxSeccompAction // "" means no filter
		failIf func(error) bool
	}{
		{name: "empty is runtime default", app: App{}, want: specs.ActErrno},
		{name: "runtime default", app: App{Seccomp: SeccompProfile{Kind: SeccompRuntimeDefault}}, want: specs.ActErrno},
		{name: "unconfined", app: App{Seccomp: SeccompProfile{Kind: SeccompUnconfined}}},
		{name: "localhost", app: App{Seccomp: SeccompProfile{Kind: SeccompLocalhost, LocalhostPath: local}}, want: specs.ActLog},
		{name: "privileged has none", app: App{Privileged: true, Seccomp: SeccompProfile{Kind: SeccompLocalhost, LocalhostPath: "/nope"}}},
		{name: "localhost missing", app: App{Seccomp: SeccompProfile{Kind: SeccompLocalhost, LocalhostPath: filepath.Join(dir, "missing.json")}}, failIf: errdefs.IsNotFound},
		{name: "localhost relative", app: App{Seccomp: SeccompProfile{Kind: SeccompLocalhost, LocalhostPath: "profile.json"}}, failIf: errdefs.IsInvalidArgument},
		{name: "unknown kind", app: App{Seccomp: SeccompProfile{Kind: "Strictest"}}, failIf: errdefs.IsInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.app.Name = "a"
			s, err := Generate(busyboxImage(), nil, tc.app, testPod(), FlavorRunc)
			if tc.failIf != nil {
				if !tc.failIf(err) {
					t.Fatalf("error = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == "" && s.Linux.Seccomp != nil:
				t.Errorf("seccomp = %+v, want none", s.Linux.Seccomp)
			case tc.want != "" && (s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != tc.want):
				t.Errorf("seccomp = %+v, want default action %s", s.Linux.Seccomp, tc.want)
			}
		})
	}
}

func TestRuntimeDefaultProfile(t *testing.T) {
	p := DefaultSeccomp()
	if p.DefaultAction != specs.ActErrno || p.DefaultErrnoRet == nil || *p.DefaultErrnoRet != 1 {
		t.Errorf("default action = %s errno %v, want SCMP_ACT_ERRNO with EPERM", p.DefaultAction, p.DefaultErrnoRet)
	}
	if !slices.Equal(p.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}) {
		t.Errorf("architectures = %v", p.Architectures)
	}
	for _, sc := range []string{"read", "openat", "execve", "clock_gettime", "arch_prctl", "chroot", "ptrace", "socketcall"} {
		if !allowedPlain(p, sc) {
			t.Errorf("%s is not allowed by default", sc)
		}
	}
	for _, sc := range []string{"mount", "umount2", "unshare", "setns", "reboot", "init_module", "kexec_load", "bpf", "keyctl", "add_key", "open_by_handle_at", "clock_settime", "acct", "swapon",
		"io_uring_setup", "io_uring_enter", "io_uring_register"} {
		if len(rulesFor(p, sc)) != 0 {
			t.Errorf("%s is allowed without its capability", sc)
		}
	}
	clone := rulesFor(p, "clone")
	if len(clone) != 1 || len(clone[0].Args) != 1 || clone[0].Args[0].Op != specs.OpMaskedEqual || clone[0].Args[0].Index != 0 ||
		clone[0].Args[0].Value != cloneNamespaceFlags || clone[0].Args[0].ValueTwo != 0 {
		t.Errorf("clone rules = %+v, want clone without namespace flags", clone)
	}
	clone3 := rulesFor(p, "clone3")
	if len(clone3) != 1 || clone3[0].Action != specs.ActErrno || *clone3[0].ErrnoRet != errnoENOSYS {
		t.Errorf("clone3 rules = %+v, want ENOSYS", clone3)
	}
	// socket(2): one equality rule per allowed family; AF_ALG (38) and
	// AF_VSOCK (40) are not among them.
	sockets := rulesFor(p, "socket")
	if len(sockets) != len(socketDomains) {
		t.Errorf("socket rules = %+v", sockets)
	}
	for _, sc := range sockets {
		if sc.Action != specs.ActAllow || len(sc.Args) != 1 || sc.Args[0].Op != specs.OpEqualTo || sc.Args[0].Index != 0 {
			t.Errorf("socket rule %+v is not one family", sc)
		} else if v := sc.Args[0].Value; v == 38 || v == 40 || v == 0 {
			t.Errorf("socket family %d is allowed", v)
		}
	}
	personas := rulesFor(p, "personality")
	if len(personas) != 5 {
		t.Errorf("personality rules = %+v", personas)
	}
}

func TestRuntimeDefaultFollowsCapabilities(t *testing.T) {
	admin := buildProfile(runtimeDefaultRules, specs.ActErrno, errnoEPERM, "amd64", append(DefaultCapabilities(), "CAP_SYS_ADMIN", "CAP_SYS_TIME", "CAP_DAC_READ_SEARCH"))
	for _, sc := range []string{"mount", "unshare", "setns", "clone", "clone3", "clock_settime", "open_by_handle_at"} {
		if !allowedPlain(admin, sc) {
			t.Errorf("%s is not allowed with its capability", sc)
		}
	}
	if rules := rulesFor(admin, "clone3"); len(rules) != 1 || rules[0].Action != specs.ActAllow {
		t.Errorf("clone3 with CAP_SYS_ADMIN = %+v, want only an allow", rules)
	}

	// Through Generate: dropping SYS_CHROOT removes chroot, adding
	// SYS_PTRACE adds kcmp.
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a", CapDrop: []string{"SYS_CHROOT"}, CapAdd: []string{"SYS_PTRACE"}}, testPod(), FlavorRunc)
	if len(rulesFor(s.Linux.Seccomp, "chroot")) != 0 || !allowedPlain(s.Linux.Seccomp, "kcmp") {
		t.Errorf("profile does not follow the app's capabilities")
	}
}

func TestRuntimeDefaultArches(t *testing.T) {
	arm := buildProfile(runtimeDefaultRules, specs.ActErrno, errnoEPERM, "arm64", defaultCapabilities)
	if !slices.Equal(arm.Architectures, []specs.Arch{specs.ArchAARCH64, specs.ArchARM}) {
		t.Errorf("arm64 architectures = %v", arm.Architectures)
	}
	if !allowedPlain(arm, "set_tls") || len(rulesFor(arm, "arch_prctl")) != 0 {
		t.Errorf("arm64 arch-specific syscalls are wrong")
	}
	s390 := buildProfile(runtimeDefaultRules, specs.ActErrno, errnoEPERM, "s390x", defaultCapabilities)
	clone := rulesFor(s390, "clone")
	if len(clone) != 1 || clone[0].Args[0].Index != 1 {
		t.Errorf("s390x clone rules = %+v, want the flags at index 1", clone)
	}
	if unknown := buildProfile(runtimeDefaultRules, specs.ActErrno, errnoEPERM, "wasm", nil); unknown.Architectures != nil {
		t.Errorf("unknown arch architectures = %v, want native only", unknown.Architectures)
	}
}

func TestRuntimeDefaultAllowListHasNoDuplicates(t *testing.T) {
	names := runtimeDefaultRules[0].names
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("%s is listed twice", n)
		}
		seen[n] = true
	}
	if len(names) < 300 {
		t.Errorf("allow-list has %d names", len(names))
	}
}

func TestDefaultSeccompIsFresh(t *testing.T) {
	a := DefaultSeccomp()
	a.Syscalls[0].Names[0] = "changed"
	if DefaultSeccomp().Syscalls[0].Names[0] == "changed" {
		t.Fatal("DefaultSeccomp shares its data with callers")
	}
}

const dockerStyleProfile = `{
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 1,
  "archMap": [
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
  ],
  "syscalls": [
    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
    {"name": "exit", "action": "SCMP_ACT_ALLOW"},
    {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"], "minKernel": "4.8"}},
    {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
    {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]},
     "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}
  ]
}`

func TestLocalhostProfile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "docker.json")
	if err := os.WriteFile(file, []byte(dockerStyleProfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := loadLocalhostProfile(file, "amd64", DefaultCapabilities())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}) {
		t.Errorf("architectures = %v", p.Architectures)
	}
	for _, sc := range []string{"read", "exit", "arch_prctl"} {
		if !allowedPlain(p, sc) {
			t.Errorf("%s is not allowed", sc)
		}
	}
	if len(rulesFor(p, "mount")) != 0 || len(rulesFor(p, "set_tls")) != 0 || len(rulesFor(p, "clone")) != 1 {
		t.Errorf("conditional entries were not evaluated: %+v", p.Syscalls)
	}
	admin, _ := loadLocalhostProfile(file, "arm64", []string{"CAP_SYS_ADMIN"})
	if !allowedPlain(admin, "mount") || !allowedPlain(admin, "set_tls") || len(rulesFor(admin, "clone")) != 0 {
		t.Errorf("arm64 admin profile = %+v", admin.Syscalls)
	}
	if !slices.Equal(admin.Architectures, []specs.Arch{specs.ArchAARCH64, specs.ArchARM}) {
		t.Errorf("arm64 architectures = %v", admin.Architectures)
	}
}

func TestLocalhostProfileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"garbage.json":  `{not json`,
		"noaction.json": `{"syscalls": []}`,
		"both.json":     `{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}`,
		"nonames.json":  `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO"}]}`,
	} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadLocalhostProfile(file, "amd64", nil)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: error = %v, want invalid argument", name, err)
		}
	}
}

// TestRuntimeDefaultRecentSyscalls: syscalls that both containerd's and
// moby's default profiles allow and that older versions of this list lacked.
// uretprobe matters most. On x86_64 kernels from 6.11, a uretprobe that a
// host tracer attaches to a function of the app returns through this
// syscall. If the filter refuses it, the traced app crashes. That stays true
// until the kernel bypasses seccomp for it (6.14, and stable backports).
// The others would fail with EPERM, which libc and util-linux do not treat
// as "not implemented, fall back". The lsm_* calls follow moby: only with
// CAP_SYS_ADMIN (containerd allows them to everyone).
func TestRuntimeDefaultRecentSyscalls(t *testing.T) {
	p := DefaultSeccomp()
	for _, sc := range []string{
		"uretprobe", "statmount", "listmount",
		"getxattrat", "setxattrat", "listxattrat", "removexattrat",
	} {
		rules := rulesFor(p, sc)
		if len(rules) != 1 || rules[0].Action != specs.ActAllow || len(rules[0].Args) != 0 {
			t.Errorf("%s: rules %+v, want one unconditional allow", sc, rules)
		}
	}
	admin, err := seccompFor(App{}, append(DefaultCapabilities(), "CAP_SYS_ADMIN"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []string{"lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"} {
		if len(rulesFor(p, sc)) != 0 {
			t.Errorf("%s allowed without CAP_SYS_ADMIN", sc)
		}
		if rules := rulesFor(admin, sc); len(rules) != 1 || rules[0].Action != specs.ActAllow {
			t.Errorf("%s with CAP_SYS_ADMIN: rules %+v, want allow", sc, rules)
		}
	}
}
