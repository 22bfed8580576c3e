package spec

import (
	"maps"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSysctls(t *testing.T) {
	userns := &UserNamespace{UIDMap: []specs.LinuxIDMapping{{Size: 1}}, GIDMap: []specs.LinuxIDMapping{{Size: 1}}}
	tests := []struct {
		name    string
		pod     Pod
		flavor  Flavor
		sysctls map[string]string
		bad     bool
	}{
		{name: "net in pod netns", pod: Pod{ID: "p"}, sysctls: map[string]string{"net.ipv4.ip_forward": "1"}},
		{name: "slash form", pod: Pod{ID: "p"}, sysctls: map[string]string{"net/ipv4/conf/eth0.100/rp_filter": "0"}},
		{name: "net with host network", pod: Pod{ID: "p", HostNetwork: true}, sysctls: map[string]string{"net.core.somaxconn": "1024"}, bad: true},
		{name: "slash net with host network", pod: Pod{ID: "p", HostNetwork: true}, sysctls: map[string]string{"net/core/somaxconn": "1"}, bad: true},
		{name: "ipc in pod ipc ns", pod: Pod{ID: "p"}, sysctls: map[string]string{"kernel.shmmax": "1", "kernel.sem": "1 2 3 4", "fs.mqueue.msg_max": "20"}},
		{name: "shm with host ipc", pod: Pod{ID: "p", HostIPC: true}, sysctls: map[string]string{"kernel.shmmax": "1"}, bad: true},
		{name: "msg with host ipc", pod: Pod{ID: "p", HostIPC: true}, sysctls: map[string]string{"kernel.msgmax": "1"}, bad: true},
		{name: "sem with host ipc", pod: Pod{ID: "p", HostIPC: true}, sysctls: map[string]string{"kernel.sem": "1"}, bad: true},
		{name: "mqueue with host ipc", pod: Pod{ID: "p", HostIPC: true}, sysctls: map[string]string{"fs.mqueue.queues_max": "1"}, bad: true},
		{name: "net with host ipc is fine", pod: Pod{ID: "p", HostIPC: true}, sysctls: map[string]string{"net.ipv4.ping_group_range": "0 1"}},
		{name: "fly shares the host network", pod: Pod{ID: "p"}, flavor: FlavorFly, sysctls: map[string]string{"net.ipv4.ip_forward": "1"}, bad: true},
		{name: "fly shares the host ipc", pod: Pod{ID: "p"}, flavor: FlavorFly, sysctls: map[string]string{"kernel.shmall": "1"}, bad: true},
		{name: "domainname with own uts", pod: Pod{ID: "p"}, sysctls: map[string]string{"kernel.domainname": "example"}},
		{name: "domainname with host uts", pod: Pod{ID: "p", HostNetwork: true}, sysctls: map[string]string{"kernel.domainname": "example"}, bad: true},
		{name: "hostname conflicts", pod: Pod{ID: "p"}, sysctls: map[string]string{"kernel.hostname": "x"}, bad: true},
		{name: "not namespaced", pod: Pod{ID: "p"}, sysctls: map[string]string{"vm.swappiness": "0"}, bad: true},
		{name: "user without userns", pod: Pod{ID: "p"}, sysctls: map[string]string{"user.max_user_namespaces": "0"}, bad: true},
		{name: "user with userns", pod: Pod{ID: "p", UserNS: userns}, sysctls: map[string]string{"user.max_user_namespaces": "0"}},
		{name: "empty name", pod: Pod{ID: "p"}, sysctls: map[string]string{"": "0"}, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Pod-level and app-level sysctls go through the same checks.
			for _, level := range []string{"pod", "app"} {
				pod, app := tc.pod, App{Name: "a"}
				if level == "pod" {
					pod.Sysctls = tc.sysctls
				} else {
					app.Sysctls = tc.sysctls
				}
				s, err := Generate(busyboxImage(), nil, app, pod, tc.flavor)
				if tc.bad {
					wantInvalid(t, err)
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", level, err)
				}
				if !maps.Equal(s.Linux.Sysctl, tc.sysctls) {
					t.Errorf("%s: sysctl = %v, want %v", level, s.Linux.Sysctl, tc.sysctls)
				}
			}
		})
	}
}

func TestSysctlAppWins(t *testing.T) {
	pod := Pod{ID: "p", Sysctls: map[string]string{"net.core.somaxconn": "128", "kernel.shmmni": "10"}}
	app := App{Name: "a", Sysctls: map[string]string{"net.core.somaxconn": "4096"}}
	s := mustGenerate(t, busyboxImage(), nil, app, pod, FlavorRunc)
	want := map[string]string{"net.core.somaxconn": "4096", "kernel.shmmni": "10"}
	if !maps.Equal(s.Linux.Sysctl, want) {
		t.Errorf("sysctl = %v, want %v", s.Linux.Sysctl, want)
	}
	if pod.Sysctls["net.core.somaxconn"] != "128" {
		t.Error("Generate changed the pod's map")
	}
	if none := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, Pod{ID: "p"}, FlavorRunc); none.Linux.Sysctl != nil {
		t.Errorf("sysctl = %v, want none", none.Linux.Sysctl)
	}
}
