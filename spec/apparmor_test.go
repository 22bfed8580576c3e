package spec

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// profileRules returns the rules of the profile block, one per line,
// without comments and blank lines.
func profileRules(t *testing.T, text, name string) []string {
	t.Helper()
	head := "profile " + name + " flags=(attach_disconnected,mediate_deleted) {"
	_, body, ok := strings.Cut(text, head+"\n")
	if !ok {
		t.Fatalf("no %q in:\n%s", head, text)
	}
	body, rest, ok := strings.Cut(body, "\n}\n")
	if !ok || rest != "" {
		t.Fatalf("profile block not closed at the end:\n%s", text)
	}
	var rules []string
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || (strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "#include")) {
			continue
		}
		rules = append(rules, l)
	}
	return rules
}

func TestAppArmorProfileText(t *testing.T) {
	full := AppArmorProfile("runclet-default", AppArmorHost{ABI3: true, Tunables: true, BaseAbstraction: true})
	preamble, _, _ := strings.Cut(full, "profile ")
	if !strings.Contains(preamble, "\nabi <abi/3.0>,\n") || !strings.Contains(preamble, "\n#include <tunables/global>\n") || strings.Contains(preamble, "@{PROC}=") {
		t.Errorf("preamble with abi and tunables:\n%s", preamble)
	}
	rules := profileRules(t, full, "runclet-default")
	if rules[0] != "#include <abstractions/base>" {
		t.Errorf("first rule %q, want the base abstraction", rules[0])
	}
	for _, want := range []string{
		"capability,", "network,", "file,", "umount,",
		"deny mount,", "deny remount,", "deny pivot_root,",
		"signal (receive) peer=unconfined,",
		"signal (send,receive) peer=runclet-default,",
		"ptrace (read,readby,trace,tracedby) peer=runclet-default,",
		"deny @{PROC}/sysrq-trigger rwklx,", "deny @{PROC}/kcore rwklx,",
		"deny /sys/firmware/** rwklx,", "deny /sys/kernel/security/** rwklx,",
	} {
		if !slices.Contains(rules, want) {
			t.Errorf("rule %q missing", want)
		}
	}
	for _, r := range rules {
		if !strings.HasPrefix(r, "#include") && !strings.HasSuffix(r, ",") {
			t.Errorf("rule %q does not end with a comma", r)
		}
		// No rule grants what the profile exists to take away.
		if !strings.HasPrefix(r, "deny ") && (strings.HasPrefix(r, "mount") || strings.HasPrefix(r, "pivot_root") || strings.Contains(r, "peer=unconfined") && strings.Contains(r, "send")) {
			t.Errorf("rule %q allows too much", r)
		}
	}
	if strings.Count(full, "{") != strings.Count(full, "}") {
		t.Errorf("unbalanced braces:\n%s", full)
	}

	// A host without the policy files: no abi, @{PROC} defined here, no
	// include of a missing abstraction; the rules are otherwise the same.
	bare := AppArmorProfile("other", AppArmorHost{})
	if strings.Contains(bare, "abi <") || strings.Contains(bare, "#include") || !strings.Contains(bare, "\n@{PROC}=/proc/\n") {
		t.Errorf("bare host profile:\n%s", bare)
	}
	bareRules := profileRules(t, bare, "other")
	if !slices.Contains(bareRules, "signal (send,receive) peer=other,") || len(bareRules) != len(rules)-1 {
		t.Errorf("bare rules %q vs %q", bareRules, rules)
	}
}

// The /proc and /sys write rules deny exactly what they say: checked with
// a small glob matcher for the AppArmor syntax the rules use.
func TestAppArmorProfileDeniesTheRightPaths(t *testing.T) {
	rules := profileRules(t, AppArmorProfile("p", AppArmorHost{}), "p")
	deniesWrite := func(path string) bool {
		for _, r := range rules {
			f := strings.Fields(strings.TrimSuffix(r, ","))
			if len(f) != 3 || f[0] != "deny" || !strings.Contains(f[2], "w") {
				continue
			}
			if aaMatch(strings.ReplaceAll(f[1], "@{PROC}", "/proc"), path) {
				return true
			}
		}
		return false
	}
	for path, denied := range map[string]bool{
		"/proc/sysrq-trigger":                         true,
		"/proc/sys/kernel/core_pattern":               true,
		"/proc/sys/kernel/modprobe":                   true,
		"/proc/sys/kernel/yama/ptrace_scope":          true,
		"/proc/sys/vm/drop_caches":                    true,
		"/proc/sys/net/ipv4/ip_forward":               true,
		"/proc/sys/fs/binfmt_misc/register":           true,
		"/proc/sys/kernel/shmmax":                     false,
		"/proc/sys/kernel/shm_rmid_forced":            false,
		"/proc/1234/oom_score_adj":                    false,
		"/proc/1234/attr/current":                     false,
		"/proc/driver/rtc":                            true,
		"/proc/sysvipc/shm":                           true,
		"/proc/acpi/wakeup":                           true,
		"/sys/kernel/mm/transparent_hugepage/enabled": true,
		"/sys/class/net/eth0/mtu":                     true,
		"/sys/fs/cgroup/memory.max":                   false,
		"/sys/fs/cgroup/pod/cgroup.procs":             false,
		"/sys/fs/fuse/connections/1/abort":            true,
		"/sys/fs/cgroupx/a":                           true,
		"/sys/firmware/efi/efivars/x":                 true,
	} {
		if got := deniesWrite(path); got != denied {
			t.Errorf("write to %s denied = %v, want %v", path, got, denied)
		}
	}
}

// aaMatch matches path against an AppArmor glob: * (not /), ** (anything),
// ? (one char, not /), [..] and [^..] classes, {a,b} alternation.
func aaMatch(glob, path string) bool {
	if i := strings.IndexByte(glob, '{'); i >= 0 {
		j := strings.IndexByte(glob[i:], '}') + i
		for _, alt := range strings.Split(glob[i+1:j], ",") {
			if aaMatch(glob[:i]+alt+glob[j+1:], path) {
				return true
			}
		}
		return false
	}
	switch {
	case glob == "":
		return path == ""
	case strings.HasPrefix(glob, "**"):
		for k := 0; k <= len(path); k++ {
			if aaMatch(glob[2:], path[k:]) {
				return true
			}
		}
		return false
	case glob[0] == '*':
		for k := 0; k <= len(path); k++ {
			if aaMatch(glob[1:], path[k:]) {
				return true
			}
			if k < len(path) && path[k] == '/' {
				return false
			}
		}
		return false
	case path == "":
		return false
	case glob[0] == '?':
		return path[0] != '/' && aaMatch(glob[1:], path[1:])
	case glob[0] == '[':
		end := strings.IndexByte(glob, ']')
		class, neg := glob[1:end], false
		if strings.HasPrefix(class, "^") {
			class, neg = class[1:], true
		}
		in := false
		for k := 0; k < len(class); k++ {
			if k+2 < len(class) && class[k+1] == '-' {
				in = in || (path[0] >= class[k] && path[0] <= class[k+2])
				k += 2
			} else {
				in = in || path[0] == class[k]
			}
		}
		return path[0] != '/' && in != neg && aaMatch(glob[end+1:], path[1:])
	default:
		return glob[0] == path[0] && aaMatch(glob[1:], path[1:])
	}
}

func TestLoadAppArmorProfileCommandLine(t *testing.T) {
	text := AppArmorProfile(AppArmorDefaultProfile, AppArmorHost{})
	var gotName string
	var gotArgs []string
	var gotStdin []byte
	run := func(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		gotName, gotArgs, gotStdin = name, args, stdin
		return nil, nil
	}
	if err := LoadAppArmorProfile(context.Background(), run, text); err != nil {
		t.Fatal(err)
	}
	if gotName != "apparmor_parser" || !slices.Equal(gotArgs, []string{"-Kr"}) || string(gotStdin) != text {
		t.Fatalf("ran %s %q with %d bytes on stdin", gotName, gotArgs, len(gotStdin))
	}
	failing := func(context.Context, []byte, string, ...string) ([]byte, error) {
		return []byte("AppArmor parser error at line 3: syntax error\n"), errors.New("exit status 1")
	}
	err := LoadAppArmorProfile(context.Background(), failing, text)
	if err == nil || !strings.Contains(err.Error(), "syntax error") || !strings.Contains(err.Error(), "apparmor_parser -Kr") {
		t.Fatalf("error %v does not say what failed", err)
	}
}

func TestAppArmorProfileLoaded(t *testing.T) {
	f := filepath.Join(t.TempDir(), "profiles")
	os.WriteFile(f, []byte("docker-default (enforce)\nrunclet-default (enforce)\n/usr/bin/man (complain)\n"), 0o644)
	for name, want := range map[string]bool{"runclet-default": true, "/usr/bin/man": true, "runclet": false} {
		if got, err := AppArmorProfileLoaded(f, name); err != nil || got != want {
			t.Errorf("%s loaded = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := AppArmorProfileLoaded(filepath.Join(t.TempDir(), "none"), "x"); err == nil {
		t.Error("missing profiles file: no error")
	}
}

func TestProbeAppArmorHost(t *testing.T) {
	dir := t.TempDir()
	if h := ProbeAppArmorHost(dir); h != (AppArmorHost{}) {
		t.Fatalf("empty dir: %+v", h)
	}
	for _, p := range []string{"abi/3.0", "tunables/global", "abstractions/base"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), nil, 0o644)
	}
	if h := ProbeAppArmorHost(dir); h != (AppArmorHost{ABI3: true, Tunables: true, BaseAbstraction: true}) {
		t.Fatalf("full dir: %+v", h)
	}
}

// The real parser, where there is one: the generated text compiles (-Q:
// no kernel load, -K: no cache); where AppArmor is enabled and this is
// root, it loads, and the kernel lists it.
func TestAppArmorProfileParses(t *testing.T) {
	parser, err := exec.LookPath("apparmor_parser")
	if err != nil {
		t.Skip("no apparmor_parser on this host (Debian package apparmor)")
	}
	text := AppArmorProfile("runclet-test-default", ProbeAppArmorHost("/etc/apparmor.d"))
	cmd := exec.Command(parser, "-QK")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apparmor_parser -QK: %v\n%s\nprofile:\n%s", err, out, text)
	}
	enabled, _ := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	if strings.TrimSpace(string(enabled)) != "Y" || os.Geteuid() != 0 {
		t.Skip("AppArmor is not enabled here (or not root): parsed, not loaded")
	}
	if err := LoadAppArmorProfile(context.Background(), ExecAppArmorRunner, text); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rm := exec.Command(parser, "-R")
		rm.Stdin = strings.NewReader(text)
		rm.Run()
	})
	if ok, err := AppArmorProfileLoaded("/sys/kernel/security/apparmor/profiles", "runclet-test-default"); !ok {
		t.Fatalf("profile not listed by the kernel after loading: %v", err)
	}
}
