package spec

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// nsString renders namespaces as "type" or "type=path" for compact tables.
func nsString(ns []specs.LinuxNamespace) []string {
	var out []string
	for _, n := range ns {
		s := string(n.Type)
		if n.Path != "" {
			s += "=" + n.Path[strings.LastIndex(n.Path, "/")+1:]
		}
		out = append(out, s)
	}
	return out
}

func TestNamespaces(t *testing.T) {
	base := testPod()
	mod := func(f func(*Pod)) Pod {
		p := base
		f(&p)
		return p
	}
	tests := []struct {
		name     string
		pod      Pod
		flavor   Flavor
		want     []string
		hostname string
	}{
		{"runc joins the pod", base, FlavorRunc,
			[]string{"pid", "network=net", "ipc=ipc", "uts=uts", "mount", "cgroup"}, "web-0"},
		{"runc new namespaces without paths", Pod{ID: "p", Hostname: "h"}, FlavorRunc,
			[]string{"pid", "network", "ipc", "uts", "mount", "cgroup"}, "h"},
		{"shared pid", mod(func(p *Pod) { p.SharePID = true }), FlavorRunc,
			[]string{"pid=pid", "network=net", "ipc=ipc", "uts=uts", "mount", "cgroup"}, "web-0"},
		{"host network takes uts too", mod(func(p *Pod) { p.HostNetwork = true }), FlavorRunc,
			[]string{"pid", "ipc=ipc", "mount", "cgroup"}, ""},
		{"host pid wins over share pid", mod(func(p *Pod) { p.HostPID, p.SharePID = true, true }), FlavorRunc,
			[]string{"network=net", "ipc=ipc", "uts=uts", "mount", "cgroup"}, "web-0"},
		{"host ipc", mod(func(p *Pod) { p.HostIPC = true }), FlavorRunc,
			[]string{"pid", "network=net", "uts=uts", "mount", "cgroup"}, "web-0"},
		{"user namespace created", mod(func(p *Pod) {
			p.UserNS = &UserNamespace{UIDMap: []specs.LinuxIDMapping{{HostID: 1e5, Size: 65536}}, GIDMap: []specs.LinuxIDMapping{{HostID: 1e5, Size: 65536}}}
		}), FlavorRunc, []string{"pid", "network=net", "ipc=ipc", "uts=uts", "mount", "cgroup", "user"}, "web-0"},
		{"user namespace joined", mod(func(p *Pod) { p.UserNS = &UserNamespace{Path: "/run/runclet/pods/p/ns/user"} }), FlavorRunc,
			[]string{"pid", "network=net", "ipc=ipc", "uts=uts", "mount", "cgroup", "user=user"}, "web-0"},
		{"fly is a mount namespace only", base, FlavorFly, []string{"mount"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, tc.pod, tc.flavor)
			if got := nsString(s.Linux.Namespaces); !slices.Equal(got, tc.want) {
				t.Errorf("namespaces = %v, want %v", got, tc.want)
			}
			if s.Hostname != tc.hostname {
				t.Errorf("hostname = %q, want %q", s.Hostname, tc.hostname)
			}
		})
	}
}

func TestUserNamespaceMappings(t *testing.T) {
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	pod := testPod()
	pod.UserNS = &UserNamespace{UIDMap: m, GIDMap: m}
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, pod, FlavorRunc)
	if !slices.Equal(s.Linux.UIDMappings, m) || !slices.Equal(s.Linux.GIDMappings, m) {
		t.Errorf("mappings = %v %v", s.Linux.UIDMappings, s.Linux.GIDMappings)
	}

	// A joined namespace carries its own mappings; runc reads them.
	pod.UserNS = &UserNamespace{Path: "/run/userns", UIDMap: m, GIDMap: m}
	s = mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, pod, FlavorRunc)
	if s.Linux.UIDMappings != nil || s.Linux.GIDMappings != nil {
		t.Errorf("joined user namespace got mappings %v %v", s.Linux.UIDMappings, s.Linux.GIDMappings)
	}
}

func TestNamespaceErrors(t *testing.T) {
	bad := []Pod{
		{ID: "p", SharePID: true},
		{ID: "p", NetNSPath: "relative/net"},
		{ID: "p", UserNS: &UserNamespace{}},
		{ID: "p", UserNS: &UserNamespace{UIDMap: []specs.LinuxIDMapping{{Size: 1}}}},
		{ID: "p", Hostname: strings.Repeat("h", 65)},
	}
	for _, pod := range bad {
		_, err := Generate(busyboxImage(), nil, App{Name: "a"}, pod, FlavorRunc)
		wantInvalid(t, err)
	}
	_, err := Generate(busyboxImage(), nil, App{Name: "a"}, Pod{ID: "p", UserNS: &UserNamespace{Path: "/u"}}, FlavorFly)
	wantInvalid(t, err)
}

func TestHostnameEnvOnHostNetwork(t *testing.T) {
	pod := Pod{ID: "p", Hostname: "node1", HostNetwork: true}
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, pod, FlavorRunc)
	if s.Hostname != "" || !slices.Contains(s.Process.Env, "HOSTNAME=node1") {
		t.Errorf("hostname = %q, env = %v", s.Hostname, s.Process.Env)
	}
}
