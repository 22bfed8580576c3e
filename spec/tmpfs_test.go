package spec

import (
	"slices"
	"testing"
)

func TestTmpfsMounts(t *testing.T) {
	app := App{Name: "a", ReadonlyRootfs: true,
		Mounts: []Mount{{HostPath: "/h/data", ContainerPath: "/tmp/data"}},
		Tmpfs:  []TmpfsMount{{ContainerPath: "/tmp/"}, {ContainerPath: "/run", Options: []string{"nosuid", "nodev", "mode=755"}}},
	}
	s := mustGenerate(t, busyboxImage(), nil, app, testPod(), FlavorRunc)
	m, ok := findMount(s.Mounts, "/tmp")
	if !ok || m.Type != "tmpfs" || !slices.Equal(m.Options, []string{"nosuid", "nodev", "mode=1777"}) {
		t.Fatalf("/tmp mount = %+v (found %v)", m, ok)
	}
	if m, _ := findMount(s.Mounts, "/run"); m.Type != "tmpfs" || !slices.Equal(m.Options, []string{"nosuid", "nodev", "mode=755"}) {
		t.Fatalf("/run mount = %+v", m)
	}
	got := destinations(s.Mounts)
	if slices.Index(got, "/tmp") > slices.Index(got, "/tmp/data") {
		t.Fatalf("the tmpfs comes after the mount inside it: %q", got)
	}
	for _, bad := range [][]TmpfsMount{{{ContainerPath: "tmp"}}, {{ContainerPath: "/"}}, {{ContainerPath: "/tmp"}, {ContainerPath: "/tmp/"}}} {
		if _, err := Generate(busyboxImage(), nil, App{Name: "a", Tmpfs: bad}, testPod(), FlavorRunc); err == nil {
			t.Errorf("tmpfs %+v accepted", bad)
		}
	}
}
