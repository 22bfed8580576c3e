package spec

import (
	"maps"
	"slices"
	"strings"

	"github.com/runclet/runclet/internal/errdefs"
)

// ipcSysctls are the System V IPC sysctls, which belong to the IPC namespace
// (the fs.mqueue.* prefix does too).
var ipcSysctls = map[string]bool{
	"kernel.msgmax":          true,
	"kernel.msgmnb":          true,
	"kernel.msgmni":          true,
	"kernel.sem":             true,
	"kernel.shmall":          true,
	"kernel.shmmax":          true,
	"kernel.shmmni":          true,
	"kernel.shm_rmid_forced": true,
}

// dottedSysctl returns the dotted form of a sysctl name, which may also be
// written with slashes ("net/ipv4/ip_forward"); in that form dots inside a
// component (an interface name like "eth0.100") become slashes.
func dottedSysctl(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, name)
}

// checkSysctl refuses a sysctl that would not stay inside the app's
// namespaces: writing it would change the host (or every pod sharing that
// namespace). runc refuses the same at start; refusing here gives the user
// a message naming the pod's setting instead.
func checkSysctl(name string, iso isolation, userNS bool) error {
	n := dottedSysctl(name)
	switch {
	case ipcSysctls[n] || strings.HasPrefix(n, "fs.mqueue."):
		if iso.hostIPC {
			return errdefs.InvalidArgument("sysctl %q is not allowed with the host's IPC namespace", name)
		}
	case strings.HasPrefix(n, "net."):
		if iso.hostNet {
			return errdefs.InvalidArgument("sysctl %q is not allowed with the host's network namespace", name)
		}
	case n == "kernel.domainname":
		if iso.hostUTS {
			return errdefs.InvalidArgument("sysctl %q is not allowed with the host's UTS namespace", name)
		}
	case n == "kernel.hostname":
		return errdefs.InvalidArgument("sysctl %q is not allowed: the hostname comes from the pod", name)
	case strings.HasPrefix(n, "user."):
		if !userNS {
			return errdefs.InvalidArgument("sysctl %q needs a user namespace", name)
		}
	default:
		return errdefs.InvalidArgument("sysctl %q is not namespaced: it would change the host", name)
	}
	return nil
}

// mergeSysctls returns the pod's sysctls overridden by the app's, after
// checking every one against the app's namespaces.
func mergeSysctls(app App, pod Pod, iso isolation) (map[string]string, error) {
	out := maps.Clone(pod.Sysctls)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, app.Sysctls)
	for _, name := range slices.Sorted(maps.Keys(out)) {
		if name == "" {
			return nil, errdefs.InvalidArgument("empty sysctl name")
		}
		if err := checkSysctl(name, iso, pod.UserNS != nil); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
