package spec

import (
	"path"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// hostNameMax is HOST_NAME_MAX: sethostname(2) refuses longer names.
const hostNameMax = 64

// isolation is what an app shares with the host, derived from the pod and
// the flavor; sysctl checks and the hostname depend on it.
type isolation struct {
	hostNet, hostIPC, hostUTS, hostPID bool
}

func podIsolation(pod Pod, flavor Flavor) isolation {
	if flavor == FlavorFly {
		return isolation{hostNet: true, hostIPC: true, hostUTS: true, hostPID: true}
	}
	// As in Kubernetes, the host network comes with the host's UTS
	// namespace: a pod on the node's network has the node's name.
	return isolation{
		hostNet: pod.HostNetwork,
		hostIPC: pod.HostIPC,
		hostUTS: pod.HostNetwork,
		hostPID: pod.HostPID,
	}
}

// nsEntry is a namespace joined at path, or a new one when path is "".
func nsEntry(t specs.LinuxNamespaceType, p string) (specs.LinuxNamespace, error) {
	if p != "" && !path.IsAbs(p) {
		return specs.LinuxNamespace{}, errdefs.InvalidArgument("%s namespace path %q is not absolute", t, p)
	}
	return specs.LinuxNamespace{Type: t, Path: p}, nil
}

// namespaces returns the app's namespaces and, for a new user namespace, its
// id mappings. Flavor fly has only a mount namespace; flavor runc joins the
// pod's pinned net, ipc and uts namespaces (new ones when no path is given),
// gets its own mount and cgroup namespace, its own pid namespace unless the
// pod shares one or uses the host's, and the pod's user namespace if any.
func namespaces(pod Pod, flavor Flavor) (ns []specs.LinuxNamespace, uidMap, gidMap []specs.LinuxIDMapping, err error) {
	if flavor == FlavorFly {
		if pod.UserNS != nil {
			return nil, nil, nil, errdefs.InvalidArgument("flavor fly does not support user namespaces")
		}
		return []specs.LinuxNamespace{{Type: specs.MountNamespace}}, nil, nil, nil
	}
	iso := podIsolation(pod, flavor)
	type want struct {
		t    specs.LinuxNamespaceType
		path string
		skip bool
	}
	pidPath := ""
	if pod.SharePID && !iso.hostPID {
		if pod.PIDNSPath == "" {
			return nil, nil, nil, errdefs.InvalidArgument("pod %s shares its pid namespace but has no pid namespace path", pod.ID)
		}
		pidPath = pod.PIDNSPath
	}
	wants := []want{
		{specs.PIDNamespace, pidPath, iso.hostPID},
		{specs.NetworkNamespace, pod.NetNSPath, iso.hostNet},
		{specs.IPCNamespace, pod.IPCNSPath, iso.hostIPC},
		{specs.UTSNamespace, pod.UTSNSPath, iso.hostUTS},
		{specs.MountNamespace, "", false},
		{specs.CgroupNamespace, "", false},
	}
	for _, w := range wants {
		if w.skip {
			continue
		}
		e, err := nsEntry(w.t, w.path)
		if err != nil {
			return nil, nil, nil, err
		}
		ns = append(ns, e)
	}
	if pod.UserNS == nil {
		return ns, nil, nil, nil
	}
	e, err := nsEntry(specs.UserNamespace, pod.UserNS.Path)
	if err != nil {
		return nil, nil, nil, err
	}
	ns = append(ns, e)
	if pod.UserNS.Path != "" {
		// runc reads the mappings of a joined namespace itself and warns
		// about (or rejects mismatching) mappings given alongside a path.
		return ns, nil, nil, nil
	}
	if len(pod.UserNS.UIDMap) == 0 || len(pod.UserNS.GIDMap) == 0 {
		return nil, nil, nil, errdefs.InvalidArgument("pod %s: a new user namespace needs uid and gid mappings", pod.ID)
	}
	return ns, slices.Clone(pod.UserNS.UIDMap), slices.Clone(pod.UserNS.GIDMap), nil
}

// hostname is the UTS hostname for the spec: the pod's, when the app has a
// UTS namespace of its own (pinned or new); nothing when it shares the host's.
func hostname(pod Pod, flavor Flavor) (string, error) {
	if len(pod.Hostname) > hostNameMax {
		return "", errdefs.InvalidArgument("hostname %q is longer than %d bytes", pod.Hostname, hostNameMax)
	}
	if podIsolation(pod, flavor).hostUTS {
		return "", nil
	}
	return pod.Hostname, nil
}
