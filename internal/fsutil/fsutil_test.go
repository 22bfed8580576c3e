package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteFileAtomicReplacesAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		if string(got) != content {
			t.Fatalf("content = %q, want %q", got, content)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v", st.Mode())
	}
}

func TestLockExcludesWithinOneProcess(t *testing.T) {
	p := filepath.Join(t.TempDir(), "l")
	l1, err := LockFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := TryLockFile(p); l != nil {
		t.Fatal("second exclusive lock granted while the first is held")
	}
	got := make(chan struct{})
	go func() {
		l2, err := LockFile(p, true)
		if err == nil {
			l2.Unlock()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("shared lock granted while an exclusive one is held")
	case <-time.After(50 * time.Millisecond):
	}
	l1.Unlock()
	<-got
	l3, _ := TryLockFile(p)
	if l3 == nil {
		t.Fatal("lock not free after unlock")
	}
	l3.Unlock()
}

func TestPrivateDirGrantsSearchToGroupsOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(dir, []uint32{300000, 200000, 300000}); err != nil {
		if errors.Is(err, ErrNoACL) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o710 { // the group bits show the ACL mask
		t.Fatalf("mode %v, want 0710", fi.Mode())
	}
	g, err := ACLGroups(dir)
	if err != nil || len(g) != 2 || g[200000] != 1 || g[300000] != 1 {
		t.Fatalf("ACL groups %v %v", g, err)
	}
	if err := PrivateDir(dir, nil); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(dir)
	if g, err := ACLGroups(dir); fi.Mode().Perm() != 0o700 || err != nil || len(g) != 0 {
		t.Fatalf("after dropping: mode %v, groups %v %v", fi.Mode(), g, err)
	}
}

func TestReadKeyValues(t *testing.T) {
	f := filepath.Join(t.TempDir(), "memory.events")
	os.WriteFile(f, []byte("low 0\nhigh 12\noom_kill 3\nsome avg10=0.00 total=5\n\n"), 0o600)
	kv, err := ReadKeyValues(f)
	if err != nil || len(kv) != 3 || kv["high"] != 12 || kv["oom_kill"] != 3 || kv["low"] != 0 {
		t.Fatalf("%v %v", kv, err)
	}
	if _, err := ReadKeyValues(f + ".none"); err == nil {
		t.Fatal("a missing file read")
	}
}
