package network

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// threadNetNSInodes returns the netns inode of every thread of this process.
func threadNetNSInodes(t *testing.T) map[uint64]int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]int{}
	for _, task := range tasks {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join("/proc/self/task", task.Name(), "ns/net"), &st); err == nil {
			out[st.Ino]++
		}
	}
	return out
}

func TestNewNetNSAndRemove(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	path := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { RemoveNetNS(path) })

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hostNS := inode(t, "/proc/thread-self/ns/net")

	// Several at once, to shake out thread reuse.
	var wg sync.WaitGroup
	paths := make([]string, 8)
	errs := make([]error, 8)
	for i := range paths {
		paths[i] = filepath.Join(filepath.Dir(path), "par"+string(rune('a'+i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = NewNetNS(paths[i])
		}()
	}
	if err := NewNetNS(path); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("parallel NewNetNS %d: %v", i, err)
		}
		t.Cleanup(func() { RemoveNetNS(paths[i]) })
	}

	if got := inode(t, "/proc/thread-self/ns/net"); got != hostNS {
		t.Fatalf("calling thread moved to netns %d (host %d)", got, hostNS)
	}
	// The throw-away threads exit right after NewNetNS returns; give them
	// a moment, then no thread of the process may be outside the host netns.
	deadline := time.Now().Add(5 * time.Second)
	for {
		stray := 0
		for ino, n := range threadNetNSInodes(t) {
			if ino != hostNS {
				stray += n
			}
		}
		if stray == 0 {
			break
		}
		if time.Now().After(deadline) {
			tasks, _ := os.ReadDir("/proc/self/task")
			for _, task := range tasks {
				var st unix.Stat_t
				unix.Stat(filepath.Join("/proc/self/task", task.Name(), "ns/net"), &st)
				if st.Ino != hostNS {
					t.Logf("stray thread %s (pid %d)", task.Name(), os.Getpid())
				}
			}
			t.Fatalf("%d threads of the process are left outside the host netns", stray)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil || sfs.Type != unix.NSFS_MAGIC {
		t.Fatalf("%s is not an nsfs mount (type %x, err %v)", path, sfs.Type, err)
	}
	pinned := inode(t, path)
	if pinned == hostNS {
		t.Fatal("pinned netns is the host's")
	}
	if inode(t, paths[0]) == pinned {
		t.Fatal("two NewNetNS calls pinned the same namespace")
	}
	if !mountinfoHas(path) {
		t.Fatal("no mount for the pinned netns in mountinfo")
	}

	// Inside: only lo, down; the thread really is in the pinned namespace.
	err := WithNetNS(path, func() error {
		if got := inode(t, "/proc/thread-self/ns/net"); got != pinned {
			t.Errorf("WithNetNS thread in netns %d, want %d", got, pinned)
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		if len(links) != 1 || links[0].Attrs().Name != "lo" {
			t.Errorf("fresh netns has links %v", links)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := inode(t, "/proc/thread-self/ns/net"); got != hostNS {
		t.Fatal("WithNetNS moved the caller's thread")
	}

	// An existing path is refused and left alone.
	if err := NewNetNS(path); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("NewNetNS on existing path: %v", err)
	}
	if !mountinfoHas(path) {
		t.Fatal("failed NewNetNS disturbed the existing pin")
	}

	for i := 0; i < 2; i++ {
		if err := RemoveNetNS(path); err != nil {
			t.Fatalf("RemoveNetNS #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("netns file still there: %v", err)
	}
	if mountinfoHas(path) {
		t.Fatal("netns mount left in mountinfo")
	}
	for _, p := range paths {
		if err := RemoveNetNS(p); err != nil {
			t.Fatal(err)
		}
		if mountinfoHas(p) {
			t.Fatalf("mount left for %s", p)
		}
	}
	if err := WithNetNS(path, func() error { return nil }); !errdefs.IsNotFound(err) {
		t.Fatalf("WithNetNS on removed netns: %v", err)
	}
}

func TestNewNetNSFailureLeavesNothing(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	dir := t.TempDir()
	if err := NewNetNS(filepath.Join(dir, "missing", "ns")); err == nil {
		t.Fatal("NewNetNS in a missing directory succeeded")
	}
	// A path whose parent is a regular file (ENOTDIR on create).
	f := filepath.Join(dir, "file")
	os.WriteFile(f, nil, 0o644)
	if err := NewNetNS(filepath.Join(f, "ns")); err == nil {
		t.Fatal("NewNetNS under a regular file succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestRemoveNetNSMissingAndPlainFile(t *testing.T) {
	dir := t.TempDir()
	if err := RemoveNetNS(filepath.Join(dir, "never")); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if os.Geteuid() != 0 {
		return // unmount of a non-mount needs CAP_SYS_ADMIN to report EINVAL
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o444)
	if err := RemoveNetNS(plain); err != nil {
		t.Fatalf("plain file: %v", err)
	}
	if _, err := os.Stat(plain); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("plain file not removed")
	}
}

func TestWithNetNSErrorsAndPanics(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	path := filepath.Join(t.TempDir(), "ns")
	if err := NewNetNS(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveNetNS(path) })
	want := errors.New("from fn")
	if err := WithNetNS(path, func() error { return want }); err != want {
		t.Fatalf("error not passed through: %v", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Fatalf("recovered %v", p)
			}
		}()
		WithNetNS(path, func() error { panic("boom") })
	}()
	// A regular file is not a namespace: setns fails, the thread is unharmed.
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, nil, 0o644)
	if err := WithNetNS(plain, func() error { return nil }); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("WithNetNS on a plain file: %v", err)
	}
}
