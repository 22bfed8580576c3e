package spec

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func destinations(ms []specs.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Destination)
	}
	return out
}

func findMount(ms []specs.Mount, dst string) (specs.Mount, bool) {
	i := slices.IndexFunc(ms, func(m specs.Mount) bool { return m.Destination == dst })
	if i < 0 {
		return specs.Mount{}, false
	}
	return ms[i], true
}

func TestMountOrdering(t *testing.T) {
	app := App{Name: "a", Mounts: []Mount{
		{HostPath: "/h/c", ContainerPath: "/data/a/b/c"},
		{HostPath: "/h/a", ContainerPath: "/data/a"},
		{HostPath: "/h/x", ContainerPath: "/x/"},
		{HostPath: "/h/ab", ContainerPath: "/data/a/b"},
		{HostPath: "/h/data", ContainerPath: "/data"},
	}}
	pod := testPod()
	s := mustGenerate(t, busyboxImage(), nil, app, pod, FlavorRunc)
	want := []string{
		"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
		"/x", "/data", "/data/a", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/data/a/b", "/data/a/b/c",
	}
	if got := destinations(s.Mounts); !slices.Equal(got, want) {
		t.Errorf("mounts =\n%q\nwant\n%q", got, want)
	}
	m, _ := findMount(s.Mounts, "/data/a")
	if m.Type != "bind" || m.Source != "/h/a" || !slices.Equal(m.Options, []string{"rbind", "rprivate", "rw"}) {
		t.Errorf("mount = %+v", m)
	}
}

func TestMountPropagation(t *testing.T) {
	tests := []struct {
		name     string
		props    []Propagation
		wantRoot string
		wantOpt  string
	}{
		{"private by default", []Propagation{""}, "", "rprivate"},
		{"explicit private", []Propagation{PropagationPrivate}, "", "rprivate"},
		{"host to container", []Propagation{PropagationHostToContainer}, "rslave", "rslave"},
		{"bidirectional", []Propagation{PropagationBidirectional}, "rshared", "rshared"},
		{"non-recursive aliases", []Propagation{"slave"}, "rslave", "rslave"},
		{"shared wins over slave", []Propagation{PropagationHostToContainer, PropagationBidirectional, ""}, "rshared", "rslave"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := App{Name: "a"}
			for i, p := range tc.props {
				app.Mounts = append(app.Mounts, Mount{HostPath: "/h", ContainerPath: "/m" + string(rune('0'+i)), Propagation: p})
			}
			s := mustGenerate(t, busyboxImage(), nil, app, testPod(), FlavorRunc)
			if s.Linux.RootfsPropagation != tc.wantRoot {
				t.Errorf("rootfs propagation = %q, want %q", s.Linux.RootfsPropagation, tc.wantRoot)
			}
			m, _ := findMount(s.Mounts, "/m0")
			if m.Options[1] != tc.wantOpt {
				t.Errorf("options = %v, want %s", m.Options, tc.wantOpt)
			}
		})
	}
}

func TestMountOptions(t *testing.T) {
	idmap := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 10}}
	app := App{Name: "a", Mounts: []Mount{
		{HostPath: "/h/ro", ContainerPath: "/ro", Readonly: true},
		{HostPath: "/h/rro", ContainerPath: "/rro", Readonly: true, RecursiveReadOnly: true, SELinuxRelabel: true},
		{HostPath: "/h/id", ContainerPath: "/id", UIDMappings: idmap, GIDMappings: idmap},
	}}
	s := mustGenerate(t, busyboxImage(), nil, app, testPod(), FlavorRunc)
	ro, _ := findMount(s.Mounts, "/ro")
	rro, _ := findMount(s.Mounts, "/rro")
	id, _ := findMount(s.Mounts, "/id")
	if !slices.Equal(ro.Options, []string{"rbind", "rprivate", "ro"}) {
		t.Errorf("ro options = %v", ro.Options)
	}
	if !slices.Equal(rro.Options, []string{"rbind", "rprivate", "ro", "rro"}) {
		t.Errorf("rro options = %v", rro.Options)
	}
	if !slices.Equal(id.UIDMappings, idmap) || !slices.Equal(id.GIDMappings, idmap) {
		t.Errorf("idmapped mount = %+v", id)
	}
}

func TestMountErrors(t *testing.T) {
	idmap := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 10}}
	bad := []Mount{
		{HostPath: "/h", ContainerPath: "relative"},
		{HostPath: "relative", ContainerPath: "/c"},
		{HostPath: "/h", ContainerPath: "/"},
		{HostPath: "/h", ContainerPath: "/c", Propagation: "shared-ish"},
		{HostPath: "/h", ContainerPath: "/c", RecursiveReadOnly: true},
		{HostPath: "/h", ContainerPath: "/c", Readonly: true, RecursiveReadOnly: true, Propagation: PropagationHostToContainer},
		{HostPath: "/h", ContainerPath: "/c", UIDMappings: idmap},
		{HostPath: "/h", ContainerPath: "/c", UIDMappings: idmap, GIDMappings: []specs.LinuxIDMapping{}},
	}
	for _, m := range bad {
		_, err := Generate(busyboxImage(), nil, App{Name: "a", Mounts: []Mount{m}}, testPod(), FlavorRunc)
		wantInvalid(t, err)
	}
	dup := []Mount{{HostPath: "/a", ContainerPath: "/c"}, {HostPath: "/b", ContainerPath: "/c/"}}
	_, err := Generate(busyboxImage(), nil, App{Name: "a", Mounts: dup}, testPod(), FlavorRunc)
	wantInvalid(t, err)
}

func TestPodFileMounts(t *testing.T) {
	pod := testPod()
	app := App{Name: "a", Mounts: []Mount{{HostPath: "/my/hosts", ContainerPath: "/etc/hosts"}}}
	s := mustGenerate(t, busyboxImage(), nil, app, pod, FlavorRunc)
	hosts, _ := findMount(s.Mounts, etcHosts)
	if hosts.Source != "/my/hosts" {
		t.Errorf("/etc/hosts = %+v, want the app's own mount", hosts)
	}
	if n := len(slices.DeleteFunc(destinations(s.Mounts), func(d string) bool { return d != etcHosts })); n != 1 {
		t.Errorf("/etc/hosts mounted %d times", n)
	}

	ro := mustGenerate(t, busyboxImage(), nil, App{Name: "a", ReadonlyRootfs: true}, pod, FlavorRunc)
	for _, dst := range []string{etcHosts, etcResolvConf, etcHostname} {
		m, ok := findMount(ro.Mounts, dst)
		if !ok || m.Options[2] != "ro" {
			t.Errorf("%s = %+v, want a read-only bind with a read-only rootfs", dst, m)
		}
	}

	bare := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, Pod{ID: "p"}, FlavorRunc)
	for _, dst := range []string{etcHosts, etcResolvConf, etcHostname} {
		if _, ok := findMount(bare.Mounts, dst); ok {
			t.Errorf("%s mounted without a pod file", dst)
		}
	}
}

func TestDefaultMounts(t *testing.T) {
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, Pod{ID: "p"}, FlavorRunc)
	shm, _ := findMount(s.Mounts, devShm)
	if shm.Type != "tmpfs" || !slices.Contains(shm.Options, "size=65536k") {
		t.Errorf("/dev/shm = %+v, want a 64m tmpfs", shm)
	}
	sys, _ := findMount(s.Mounts, sysfsDir)
	cg, _ := findMount(s.Mounts, cgroupfsDir)
	if !slices.Contains(sys.Options, "ro") || !slices.Contains(cg.Options, "ro") {
		t.Errorf("/sys = %v, cgroup = %v, want read-only", sys.Options, cg.Options)
	}
	pts, _ := findMount(s.Mounts, "/dev/pts")
	if !slices.Contains(pts.Options, "newinstance") || !slices.Contains(pts.Options, "ptmxmode=0666") || !slices.Contains(pts.Options, "gid=5") {
		t.Errorf("/dev/pts = %v", pts.Options)
	}

	priv := mustGenerate(t, busyboxImage(), nil, App{Name: "a", Privileged: true}, Pod{ID: "p"}, FlavorRunc)
	sys, _ = findMount(priv.Mounts, sysfsDir)
	cg, _ = findMount(priv.Mounts, cgroupfsDir)
	if !slices.Contains(sys.Options, "rw") || !slices.Contains(cg.Options, "rw") {
		t.Errorf("privileged /sys = %v, cgroup = %v, want read-write", sys.Options, cg.Options)
	}

	// An app mount on a default destination replaces the default.
	own := mustGenerate(t, busyboxImage(), nil, App{Name: "a", Mounts: []Mount{{HostPath: "/big/shm", ContainerPath: "/dev/shm"}}}, testPod(), FlavorRunc)
	shm, _ = findMount(own.Mounts, devShm)
	if n := len(slices.DeleteFunc(destinations(own.Mounts), func(d string) bool { return d != devShm })); shm.Source != "/big/shm" || n != 1 {
		t.Errorf("/dev/shm = %+v in %v", shm, destinations(own.Mounts))
	}
}

func TestMaskedAndReadonlyPaths(t *testing.T) {
	tests := []struct {
		name                 string
		app                  App
		wantMasked, wantRead []string
	}{
		{"defaults", App{}, DefaultMaskedPaths(), DefaultReadonlyPaths()},
		{"unmasked", App{MaskedPaths: []string{}, ReadonlyPaths: []string{}}, nil, nil},
		{"custom", App{MaskedPaths: []string{"/proc/kcore/"}, ReadonlyPaths: []string{"/proc/sys"}}, []string{"/proc/kcore"}, []string{"/proc/sys"}},
		{"privileged", App{Privileged: true, MaskedPaths: []string{"/x"}}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.app.Name = "a"
			s := mustGenerate(t, busyboxImage(), nil, tc.app, testPod(), FlavorRunc)
			if !slices.Equal(s.Linux.MaskedPaths, tc.wantMasked) && len(s.Linux.MaskedPaths)+len(tc.wantMasked) > 0 {
				t.Errorf("masked = %v, want %v", s.Linux.MaskedPaths, tc.wantMasked)
			}
			if !slices.Equal(s.Linux.ReadonlyPaths, tc.wantRead) && len(s.Linux.ReadonlyPaths)+len(tc.wantRead) > 0 {
				t.Errorf("readonly = %v, want %v", s.Linux.ReadonlyPaths, tc.wantRead)
			}
		})
	}
	_, err := Generate(busyboxImage(), nil, App{Name: "a", MaskedPaths: []string{"proc"}}, testPod(), FlavorRunc)
	wantInvalid(t, err)
}

// TestHostIPCShm: an app in the host's IPC namespace gets the host's
// /dev/shm, as with containerd and Docker, so POSIX shared memory (which
// lives in /dev/shm, not in the IPC namespace) is shared with the host like
// SysV shared memory is. Other apps keep a private tmpfs.
func TestHostIPCShm(t *testing.T) {
	bare := Pod{ID: "p1", Name: "p"}
	hostIPC := bare
	hostIPC.HostIPC = true
	for _, tc := range []struct {
		name     string
		pod      Pod
		flavor   Flavor
		wantType string
		wantSrc  string
	}{
		{"own ipc", bare, FlavorRunc, "tmpfs", "shm"},
		{"host ipc", hostIPC, FlavorRunc, "bind", "/dev/shm"},
		{"fly", bare, FlavorFly, "bind", "/dev/shm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustGenerate(t, busyboxImage(), busyboxFiles(), App{Name: "a"}, tc.pod, tc.flavor)
			shm, ok := findMount(s.Mounts, devShm)
			if !ok || shm.Type != tc.wantType || shm.Source != tc.wantSrc {
				t.Fatalf("/dev/shm = %+v, want type %s source %s", shm, tc.wantType, tc.wantSrc)
			}
			if shm.Type == "bind" && !slices.Equal(shm.Options, []string{"rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"}) {
				t.Errorf("/dev/shm options = %v", shm.Options)
			}
		})
	}
}
