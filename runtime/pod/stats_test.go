package pod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runclet/runclet/internal/errdefs"
)

func TestParseCgroupMounts(t *testing.T) {
	hybrid := `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
`
	h, err := parseCgroupMounts(strings.NewReader(hybrid))
	if err != nil {
		t.Fatal(err)
	}
	if h.v1["cpuacct"] != "/sys/fs/cgroup/cpu,cpuacct" || h.v1["memory"] != "/sys/fs/cgroup/memory" || h.v1["pids"] != "/sys/fs/cgroup/pids" ||
		h.unified != "/sys/fs/cgroup/unified" || h.v1["rw"] != "" {
		t.Fatalf("hybrid: %+v", h)
	}
	h, _ = parseCgroupMounts(strings.NewReader("25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"))
	if len(h.v1) != 0 || h.unified != "/sys/fs/cgroup" {
		t.Fatalf("unified: %+v", h)
	}
}

func TestCgroupfsPath(t *testing.T) {
	for in, want := range map[string]string{
		"/runclet/abc":                     "/runclet/abc",
		"/kubepods/burstable/pod1":         "/kubepods/burstable/pod1",
		"runclet-abc.slice":                "/runclet.slice/runclet-abc.slice",
		"kubepods-besteffort-pod1_2.slice": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice",
		"kubepods.slice":                   "/kubepods.slice",
		"-.slice":                          "/",
		"kubepods/burstable":               "/kubepods/burstable",
	} {
		if got := cgroupfsPath(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPodCgroupStatsV1AndV2(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"v1/cpuacct/pod/cpuacct.usage":        "123456789\n",
		"v1/memory/pod/memory.usage_in_bytes": "10485760\n",
		"v1/memory/pod/memory.limit_in_bytes": "9223372036854771712\n",
		"v1/memory/pod/memory.stat":           "cache 1\nrss 5\ninactive_file 7\ntotal_rss 4194304\ntotal_inactive_file 2097152\ntotal_pgfault 42\ntotal_pgmajfault 3\n",
		"v1/pids/pod/pids.current":            "5\n",
		"v2/pod/cpu.stat":                     "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
		"v2/pod/memory.current":               "8388608\n",
		"v2/pod/memory.max":                   "16777216\n",
		"v2/pod/memory.stat":                  "anon 3145728\nfile 4194304\ninactive_file 1048576\npgfault 9\npgmajfault 1\n",
		"v2/pod/pids.current":                 "2\n",
		"v2/nomem/cpu.stat":                   "usage_usec 1\n",
	})
	v1 := cgroupHierarchies{v1: map[string]string{"cpuacct": filepath.Join(root, "v1/cpuacct"), "memory": filepath.Join(root, "v1/memory"), "pids": filepath.Join(root, "v1/pids")}}
	if c := v1.cpu("/pod"); c == nil || c.UsageNanos != 123456789 {
		t.Fatalf("v1 cpu: %+v", c)
	}
	m := v1.memory("/pod")
	if m == nil || *m != (MemoryStats{Usage: 10 << 20, WorkingSet: 8 << 20, RSS: 4 << 20, Limit: 0, PageFaults: 42, MajorFaults: 3}) {
		t.Fatalf("v1 memory: %+v", m)
	}
	if p := v1.pids("/pod"); p == nil || *p != 5 {
		t.Fatalf("v1 pids: %v", p)
	}
	v2 := cgroupHierarchies{v1: map[string]string{}, unified: filepath.Join(root, "v2")}
	if c := v2.cpu("/pod"); c == nil || c.UsageNanos != 2500000 {
		t.Fatalf("v2 cpu: %+v", c)
	}
	m = v2.memory("/pod")
	if m == nil || *m != (MemoryStats{Usage: 8 << 20, WorkingSet: 7 << 20, RSS: 3 << 20, Limit: 16 << 20, PageFaults: 9, MajorFaults: 1}) {
		t.Fatalf("v2 memory: %+v", m)
	}
	if p := v2.pids("/pod"); p == nil || *p != 2 {
		t.Fatalf("v2 pids: %v", p)
	}
	// No memory controller in the subtree, no such cgroup: nothing, no error.
	if v2.memory("/nomem") != nil || v2.pids("/nomem") != nil || v2.cpu("/gone") != nil || v1.memory("/gone") != nil {
		t.Fatal("numbers from a cgroup without them")
	}
}

func TestParseNetDev(t *testing.T) {
	data := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    5392      60    1    3    0     0          0         0     1506      17    2    4    0     0       0          0
`
	got := parseNetDev([]byte(data))
	want := InterfaceStats{Name: "eth0", RxBytes: 5392, RxPackets: 60, RxErrors: 1, RxDropped: 3, TxBytes: 1506, TxPackets: 17, TxErrors: 2, TxDropped: 4}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("%+v", got)
	}
}

func TestMountSource(t *testing.T) {
	info := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw - proc proc rw
60 22 8:1 /var/lib/runclet /var/lib/runclet rw - ext4 /dev/sda1 rw
61 22 0:45 / /run/x rw shared:5 master:2 - tmpfs tmpfs rw,size=10k
`
	for majmin, want := range map[string]string{"8:1": "/dev/sda1", "0:45": "tmpfs", "0:99": ""} {
		if got := mountSource(strings.NewReader(info), majmin); got != want {
			t.Errorf("%s: %q, want %q", majmin, got, want)
		}
	}
}

func TestDiskUsageCountsHardLinksOnce(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a/big": strings.Repeat("x", 64<<10), "b": "y"})
	if err := os.Link(filepath.Join(dir, "a/big"), filepath.Join(dir, "big-again")); err != nil {
		t.Fatal(err)
	}
	bytes, inodes, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	// dir, a, a/big (once), b
	if inodes != 4 || bytes < 64<<10 || bytes > 64<<10+64<<10 {
		t.Fatalf("%d bytes, %d inodes", bytes, inodes)
	}
	m := &Manager{l: Layout{Root: dir}}
	if _, err := m.WritableLayerUsage("nopod", "noapp"); !errdefs.IsNotFound(err) {
		t.Fatalf("missing layer: %v", err)
	}
	// A layer: its bytes and inodes, its filesystem's size and inodes.
	upper := filepath.Join(m.l.AppDir("pod", "app"), "fs", "upper")
	writeFiles(t, upper, map[string]string{"etc/f": "data"})
	u, err := m.WritableLayerUsage("pod", "app")
	if err != nil {
		t.Fatal(err)
	}
	if u.Inodes != 3 || u.Device == "" || u.Capacity == 0 || u.InodesTotal < u.InodesFree {
		t.Fatalf("layer usage %+v", u)
	}
}
