package container

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The count a watch saw outlives the file: systemd removes an app's scope
// cgroup, memory.events included, as soon as its last process exits, so
// the exit path must not depend on reading the file then. A plain file
// stands in for memory.events (the host CI runs on has no v2 memory
// controller; make vmtest checks the real one with the systemd driver).
func TestOOMWatchKeepsCountAfterFileRemoval(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "memory.events")
	if err := os.WriteFile(file, []byte("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := watchOOM(file)
	if w == nil {
		t.Fatal("no watch")
	}
	defer w.close()
	if w.count() != 0 {
		t.Fatalf("count %d before any kill", w.count())
	}
	if err := os.WriteFile(file, []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.count() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("count %d after the kill, want 1", w.count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	os.Remove(file)
	time.Sleep(50 * time.Millisecond)
	if w.count() != 1 || oomKills(file) != 0 {
		t.Fatalf("after removal: watch %d, file %d", w.count(), oomKills(file))
	}
	if watchOOM(filepath.Join(dir, "none")) != nil {
		t.Fatal("a watch of a missing file (cgroup v1)")
	}
}
