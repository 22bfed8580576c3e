package pod

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/internal/testutil"
)

// A store an older runclet made (data root o+x, pod and app dirs
// 0711/0755) is tightened when a Manager opens it: 0700 everywhere, and
// a user-namespaced pod keeps a way to its bundle for its root's group.
func TestNewTightensAnOlderStore(t *testing.T) {
	testutil.RequiresRoot(t, "directories are chowned to the pod root's group")
	base := t.TempDir()
	l := Layout{Root: filepath.Join(base, "data"), RunRoot: filepath.Join(base, "run")}
	const gid = 320000
	pods := []*Pod{{ID: "plain"}, {ID: "userns", IDMap: &UserNSConfig{
		UIDMap: []specs.LinuxIDMapping{{ContainerID: 0, HostID: gid, Size: 65536}},
		GIDMap: []specs.LinuxIDMapping{{ContainerID: 0, HostID: gid, Size: 65536}},
	}}}
	mk := func(d string, mode os.FileMode) {
		if err := os.MkdirAll(d, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, mode)
	}
	mk(l.Root, 0o711)
	mk(l.podsDir(), 0o711)
	mk(filepath.Join(l.RunRoot, "pods"), 0o711)
	mk(l.StateRoot(), 0o711)
	os.Chmod(l.RunRoot, 0o711)
	for _, p := range pods {
		mk(l.EtcDir(p.ID), 0o711)
		mk(l.PodDir(p.ID), 0o711)
		mk(filepath.Join(l.AppDir(p.ID, "a"), "fs", "upper"), 0o755)
		mk(filepath.Join(l.AppDir(p.ID, "a"), "fs"), 0o755)
		mk(filepath.Join(l.Bundle(p.ID, "a"), "rootfs"), 0o755)
		mk(l.Bundle(p.ID, "a"), 0o755)
		mk(l.AppDir(p.ID, "a"), 0o711)
		mk(filepath.Join(l.PodDir(p.ID), "apps"), 0o711)
		mk(filepath.Join(l.RunDir(p.ID), "ns"), 0o711)
		mk(l.RunDir(p.ID), 0o711)
		if err := l.savePod(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Options{Layout: l}); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		l.RunRoot: 0o700, filepath.Join(l.RunRoot, "pods"): 0o700, l.StateRoot(): 0o700,
		// The ACL's mask shows as the group bits.
		l.Root: 0o710, l.podsDir(): 0o710,
	}
	for _, p := range pods {
		m := os.FileMode(0o700)
		if p.IDMap != nil {
			m = 0o710
		}
		for _, d := range []string{l.PodDir(p.ID), l.EtcDir(p.ID), filepath.Join(l.PodDir(p.ID), "apps"), l.AppDir(p.ID, "a"), l.Bundle(p.ID, "a")} {
			want[d] = m
		}
		want[filepath.Join(l.AppDir(p.ID, "a"), "fs")] = 0o700
		want[filepath.Join(l.AppDir(p.ID, "a"), "fs", "upper")] = 0o755 // the container's "/"
		want[l.RunDir(p.ID)] = 0o700
		want[filepath.Join(l.RunDir(p.ID), "ns")] = 0o700
	}
	for d, m := range want {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != m {
			t.Errorf("%s: mode %v, want %v (%v)", d, st.Mode().Perm(), m, err)
		}
	}
	for _, d := range []string{l.Root, l.podsDir()} {
		if g, err := fsutil.ACLGroups(d); err != nil || len(g) != 1 || g[gid] != 1 {
			t.Errorf("%s: ACL groups %v %v, want only %d:--x", d, g, err, gid)
		}
	}
	if st, err := os.Stat(l.Bundle("userns", "a")); err != nil || st.Sys().(*syscall.Stat_t).Gid != gid {
		t.Errorf("userns pod's bundle is not group %d: %v", gid, err)
	}
	if g, _ := fsutil.ACLGroups(l.PodDir("plain")); len(g) != 0 {
		t.Errorf("plain pod dir has ACL groups %v", g)
	}
}
