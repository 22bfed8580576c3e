package spec

import (
	"maps"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCgroupsPath(t *testing.T) {
	tests := []struct {
		name string
		pod  Pod
		want string
		bad  bool
	}{
		{name: "cgroupfs parent", pod: Pod{ID: "p1", CgroupParent: "/kubepods/burstable/podabc"}, want: "/kubepods/burstable/podabc/web"},
		{name: "cgroupfs default", pod: Pod{ID: "p1"}, want: "/runclet/p1/web"},
		{name: "cgroupfs relative parent", pod: Pod{ID: "p1", CgroupParent: "kubepods"}, bad: true},
		{name: "systemd parent", pod: Pod{ID: "p1", SystemdCgroup: true, CgroupParent: "kubepods-burstable-podabc.slice"}, want: "kubepods-burstable-podabc.slice:runclet:p1-web"},
		{name: "systemd default", pod: Pod{ID: "p1", SystemdCgroup: true}, want: "runclet.slice:runclet:p1-web"},
		{name: "systemd path parent", pod: Pod{ID: "p1", SystemdCgroup: true, CgroupParent: "/runclet/p1"}, bad: true},
		// kubelet's systemd driver sends the slice's path, critest /test.slice.
		{name: "systemd kubelet parent", pod: Pod{ID: "p1", SystemdCgroup: true, CgroupParent: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podabc.slice"}, want: "kubepods-burstable-podabc.slice:runclet:p1-web"},
		{name: "systemd critest parent", pod: Pod{ID: "p1", SystemdCgroup: true, CgroupParent: "/test.slice"}, want: "test.slice:runclet:p1-web"},
		{name: "systemd path elsewhere", pod: Pod{ID: "p1", SystemdCgroup: true, CgroupParent: "/system.slice/kubepods-podabc.slice"}, bad: true},
		{name: "systemd root path", pod: Pod{ID: "p1", SystemdCgroup: true, CgroupParent: "/"}, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Generate(busyboxImage(), nil, App{Name: "web"}, tc.pod, FlavorRunc)
			if tc.bad {
				wantInvalid(t, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Linux.CgroupsPath != tc.want {
				t.Errorf("cgroups path = %q, want %q", s.Linux.CgroupsPath, tc.want)
			}
		})
	}
}

func TestResources(t *testing.T) {
	r := Resources{
		CPUShares: 2, CPUQuota: -1, CPUPeriod: 100000, MemoryLimit: 1 << 30, PidsLimit: -1,
		HugepageLimits: map[string]uint64{"2MB": 1 << 21, "64KB": 0},
		Unified:        map[string]string{"memory.oom.group": "1"},
	}
	got, err := LinuxResources(r)
	if err != nil {
		t.Fatal(err)
	}
	if *got.CPU.Shares != 2 || *got.CPU.Quota != -1 || *got.CPU.Period != 100000 {
		t.Errorf("cpu = %+v", got.CPU)
	}
	if *got.Memory.Limit != 1<<30 || got.Memory.Swap != nil {
		t.Errorf("memory = %+v, want a limit and no swap", got.Memory)
	}
	if *got.Pids.Limit != -1 {
		t.Errorf("pids = %+v", got.Pids)
	}
	wantHuge := []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 21}, {Pagesize: "64KB", Limit: 0}}
	if !slices.Equal(got.HugepageLimits, wantHuge) {
		t.Errorf("hugepages = %v", got.HugepageLimits)
	}
	if !maps.Equal(got.Unified, r.Unified) {
		t.Errorf("unified = %v", got.Unified)
	}

	swap, _ := LinuxResources(Resources{MemoryLimit: 100, MemorySwapLimit: 300})
	if *swap.Memory.Swap != 300 {
		t.Errorf("swap = %v", swap.Memory)
	}

	empty, _ := LinuxResources(Resources{})
	if empty.CPU != nil || empty.Memory != nil || empty.Pids != nil || empty.HugepageLimits != nil || empty.Unified != nil {
		t.Errorf("empty resources = %+v", empty)
	}

	for _, bad := range []Resources{
		{MemoryLimit: 200, MemorySwapLimit: 100},
		{MemoryLimit: -1},
		{CPUShares: -2},
		{CPUPeriod: -1},
		{HugepageLimits: map[string]uint64{"2M": 1}},
		{HugepageLimits: map[string]uint64{"huge": 1}},
	} {
		_, err := LinuxResources(bad)
		wantInvalid(t, err)
	}
}

func TestDevices(t *testing.T) {
	fuse := Device{HostPath: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: 0o666}
	disk := Device{HostPath: "/dev/sdb", ContainerPath: "/dev/xvda", Type: "b", Major: 8, Minor: 16, Permissions: "r", FileMode: 0o660, GID: 6}
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a", Devices: []Device{fuse, disk}}, testPod(), FlavorRunc)

	if len(s.Linux.Devices) != 2 || s.Linux.Devices[0].Path != "/dev/fuse" || s.Linux.Devices[1].Path != "/dev/xvda" ||
		*s.Linux.Devices[1].GID != 6 || *s.Linux.Devices[1].FileMode != 0o660 {
		t.Errorf("devices = %+v", s.Linux.Devices)
	}
	rules := s.Linux.Resources.Devices
	if rules[0].Allow || rules[0].Access != "rwm" || rules[0].Type != "" {
		t.Errorf("first rule = %+v, want deny all", rules[0])
	}
	wantTail := []specs.LinuxDeviceCgroup{
		{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "rwm"},
		{Allow: true, Type: "b", Major: i64(8), Minor: i64(16), Access: "r"},
	}
	tail := rules[len(rules)-2:]
	for i := range wantTail {
		if tail[i].Allow != wantTail[i].Allow || tail[i].Type != wantTail[i].Type || *tail[i].Major != *wantTail[i].Major ||
			*tail[i].Minor != *wantTail[i].Minor || tail[i].Access != wantTail[i].Access {
			t.Errorf("rule %d = %+v, want %+v", i, tail[i], wantTail[i])
		}
	}
	if len(rules) != len(defaultDeviceRules())+2 {
		t.Errorf("%d rules, want the defaults plus two", len(rules))
	}

	// Host devices only reach privileged apps; requested ones win on the
	// same path.
	own := Device{HostPath: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: 0o600}
	host := []Device{fuse, disk}
	unpriv := mustGenerate(t, busyboxImage(), nil, App{Name: "a", HostDevices: host}, testPod(), FlavorRunc)
	if len(unpriv.Linux.Devices) != 0 {
		t.Errorf("unprivileged app got host devices %+v", unpriv.Linux.Devices)
	}
	priv := mustGenerate(t, busyboxImage(), nil, App{Name: "a", Privileged: true, HostDevices: host, Devices: []Device{own}}, testPod(), FlavorRunc)
	if len(priv.Linux.Devices) != 2 || *priv.Linux.Devices[0].FileMode != 0o600 {
		t.Errorf("privileged devices = %+v", priv.Linux.Devices)
	}
	if r := priv.Linux.Resources.Devices; len(r) != 2 || r[0].Allow || !r[1].Allow || r[1].Access != "rwm" || r[1].Type != "" {
		t.Errorf("privileged rules = %+v, want allow all", r)
	}

	for _, bad := range []Device{
		{HostPath: "dev/fuse", Type: "c"},
		{HostPath: "/dev/fuse", Type: "p"},
		{HostPath: "/dev/fuse", Type: "c", Permissions: "rx"},
		{HostPath: "/dev/fuse", Type: "c", Major: -1},
		{HostPath: "/dev/fuse", ContainerPath: "fuse", Type: "c"},
	} {
		_, err := Generate(busyboxImage(), nil, App{Name: "a", Devices: []Device{bad}}, testPod(), FlavorRunc)
		wantInvalid(t, err)
	}
}

func TestCgroupLeafIsTheAppID(t *testing.T) {
	for systemd, want := range map[bool]string{false: "/runclet/p1/c0ffee", true: "runclet.slice:runclet:p1-c0ffee"} {
		s, err := Generate(busyboxImage(), nil, App{Name: "web", ID: "c0ffee"}, Pod{ID: "p1", SystemdCgroup: systemd}, FlavorRunc)
		if err != nil {
			t.Fatal(err)
		}
		if s.Linux.CgroupsPath != want {
			t.Errorf("systemd=%v: cgroups path %q, want %q", systemd, s.Linux.CgroupsPath, want)
		}
	}
}

func TestMergeResourcesKeepsWhatIsNotSet(t *testing.T) {
	shares, period, limit, swap := uint64(1024), uint64(100000), int64(64<<20), int64(64<<20)
	major := int64(1)
	old := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: &major, Access: "rwm"}},
		CPU:     &specs.LinuxCPU{Shares: &shares, Period: &period, Cpus: "0-3"},
		Memory:  &specs.LinuxMemory{Limit: &limit, Swap: &swap},
		Unified: map[string]string{"memory.high": "1"},
	}
	newLimit, quota := int64(32<<20), int64(50000)
	got := MergeResources(old, &specs.LinuxResources{
		CPU:     &specs.LinuxCPU{Quota: &quota},
		Memory:  &specs.LinuxMemory{Limit: &newLimit, Swap: &newLimit},
		Unified: map[string]string{"memory.max": "2"},
	})
	if len(got.Devices) != 2 || *got.CPU.Shares != 1024 || *got.CPU.Period != 100000 || *got.CPU.Quota != 50000 || got.CPU.Cpus != "0-3" ||
		*got.Memory.Limit != 32<<20 || *got.Memory.Swap != 32<<20 || got.Unified["memory.high"] != "1" || got.Unified["memory.max"] != "2" {
		t.Fatalf("%+v", got)
	}
	if *old.Memory.Limit != 64<<20 || old.CPU.Quota != nil || len(old.Unified) != 1 {
		t.Fatal("old was changed")
	}
	if got := MergeResources(nil, &specs.LinuxResources{}); got == nil || got.CPU != nil {
		t.Fatalf("from nothing: %+v", got)
	}
}
