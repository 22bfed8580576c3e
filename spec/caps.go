package spec

import (
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// allCapabilities lists every capability up to CAP_CHECKPOINT_RESTORE
// (Linux 5.9) in kernel number order. It is static on purpose: a privileged
// app gets the same set on every host, and runc drops (with a warning) the
// ones an older kernel does not know.
var allCapabilities = []string{
	"CAP_CHOWN",              // 0
	"CAP_DAC_OVERRIDE",       // 1
	"CAP_DAC_READ_SEARCH",    // 2
	"CAP_FOWNER",             // 3
	"CAP_FSETID",             // 4
	"CAP_KILL",               // 5
	"CAP_SETGID",             // 6
	"CAP_SETUID",             // 7
	"CAP_SETPCAP",            // 8
	"CAP_LINUX_IMMUTABLE",    // 9
	"CAP_NET_BIND_SERVICE",   // 10
	"CAP_NET_BROADCAST",      // 11
	"CAP_NET_ADMIN",          // 12
	"CAP_NET_RAW",            // 13
	"CAP_IPC_LOCK",           // 14
	"CAP_IPC_OWNER",          // 15
	"CAP_SYS_MODULE",         // 16
	"CAP_SYS_RAWIO",          // 17
	"CAP_SYS_CHROOT",         // 18
	"CAP_SYS_PTRACE",         // 19
	"CAP_SYS_PACCT",          // 20
	"CAP_SYS_ADMIN",          // 21
	"CAP_SYS_BOOT",           // 22
	"CAP_SYS_NICE",           // 23
	"CAP_SYS_RESOURCE",       // 24
	"CAP_SYS_TIME",           // 25
	"CAP_SYS_TTY_CONFIG",     // 26
	"CAP_MKNOD",              // 27
	"CAP_LEASE",              // 28
	"CAP_AUDIT_WRITE",        // 29
	"CAP_AUDIT_CONTROL",      // 30
	"CAP_SETFCAP",            // 31
	"CAP_MAC_OVERRIDE",       // 32
	"CAP_MAC_ADMIN",          // 33
	"CAP_SYSLOG",             // 34
	"CAP_WAKE_ALARM",         // 35
	"CAP_BLOCK_SUSPEND",      // 36
	"CAP_AUDIT_READ",         // 37
	"CAP_PERFMON",            // 38
	"CAP_BPF",                // 39
	"CAP_CHECKPOINT_RESTORE", // 40
}

// defaultCapabilities is containerd's (and Docker's) default set.
var defaultCapabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// capAll is the CRI spelling of "every capability".
const capAll = "ALL"

// DefaultCapabilities returns the capabilities an unprivileged app gets, in
// kernel number order.
func DefaultCapabilities() []string {
	return sortCaps(slices.Clone(defaultCapabilities))
}

// AllCapabilities returns every capability a privileged app gets.
func AllCapabilities() []string {
	return slices.Clone(allCapabilities)
}

// normalizeCap turns "net_admin", "NET_ADMIN" or "CAP_NET_ADMIN" into
// "CAP_NET_ADMIN", and keeps "ALL".
func normalizeCap(c string) (string, error) {
	u := strings.ToUpper(strings.TrimSpace(c))
	if u == capAll || u == "CAP_"+capAll {
		return capAll, nil
	}
	if !strings.HasPrefix(u, "CAP_") {
		u = "CAP_" + u
	}
	if !slices.Contains(allCapabilities, u) {
		return "", errdefs.InvalidArgument("unknown capability %q", c)
	}
	return u, nil
}

func normalizeCaps(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, c := range list {
		n, err := normalizeCap(c)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// sortCaps orders capabilities by kernel number so specs are deterministic.
func sortCaps(caps []string) []string {
	slices.SortFunc(caps, func(a, b string) int {
		return slices.Index(allCapabilities, a) - slices.Index(allCapabilities, b)
	})
	return slices.Compact(caps)
}

// computeCaps applies CRI's add/drop rules to the default set: "ALL" in add
// starts from every capability and "ALL" in drop from none, before the
// individual adds and drops, so add [ALL] drop [CHOWN] means everything but
// CAP_CHOWN and drop [ALL] add [NET_ADMIN] means only CAP_NET_ADMIN.
// Privileged apps get every capability regardless.
func computeCaps(app App) ([]string, error) {
	if app.Privileged {
		return AllCapabilities(), nil
	}
	add, err := normalizeCaps(app.CapAdd)
	if err != nil {
		return nil, err
	}
	drop, err := normalizeCaps(app.CapDrop)
	if err != nil {
		return nil, err
	}
	caps := slices.Clone(defaultCapabilities)
	if slices.Contains(add, capAll) {
		caps = slices.Clone(allCapabilities)
	}
	if slices.Contains(drop, capAll) {
		caps = nil
	}
	for _, c := range add {
		if c != capAll {
			caps = append(caps, c)
		}
	}
	caps = slices.DeleteFunc(caps, func(c string) bool { return slices.Contains(drop, c) })
	return sortCaps(caps), nil
}

// capabilitySets puts caps in the bounding, effective and permitted sets.
// Inheritable and ambient stay empty as in containerd since
// CVE-2022-24769: a non-root process must not gain capabilities at execve.
func capabilitySets(caps []string) *specs.LinuxCapabilities {
	return &specs.LinuxCapabilities{
		Bounding:  slices.Clone(caps),
		Effective: slices.Clone(caps),
		Permitted: slices.Clone(caps),
	}
}
