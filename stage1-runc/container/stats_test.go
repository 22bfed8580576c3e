package container

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/opencontainers/cgroups"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/stage1-runc/proto"
)

func TestStatsFromCgroupV1AndV2(t *testing.T) {
	v1 := cgroups.NewStats()
	v1.CpuStats.CpuUsage = cgroups.CpuUsage{TotalUsage: 5e9, UsageInUsermode: 3e9, UsageInKernelmode: 2e9}
	v1.CpuStats.ThrottlingData = cgroups.ThrottlingData{Periods: 50, ThrottledPeriods: 5, ThrottledTime: 7e8}
	v1.MemoryStats.Usage = cgroups.MemoryData{Usage: 100 << 20, MaxUsage: 120 << 20, Failcnt: 3, Limit: 9223372036854771712}
	v1.MemoryStats.SwapUsage = cgroups.MemoryData{Usage: 101 << 20, Limit: 9223372036854771712}
	v1.MemoryStats.SwapOnlyUsage = cgroups.MemoryData{Usage: 1 << 20}
	v1.MemoryStats.KernelUsage = cgroups.MemoryData{Usage: 2 << 20}
	v1.MemoryStats.Stats = map[string]uint64{
		"rss": 1, "inactive_file": 2, "pgfault": 3, "cache": 4, // the cgroup's own: not these
		"total_rss": 40 << 20, "total_inactive_file": 30 << 20, "total_pgfault": 1000, "total_pgmajfault": 7,
		"total_cache": 50 << 20, "total_mapped_file": 5 << 20,
	}
	v1.PidsStats = cgroups.PidsStats{Current: 4, Limit: 100}
	v1.BlkioStats.IoServiceBytesRecursive = []cgroups.BlkioStatEntry{
		{Major: 8, Minor: 0, Op: "Read", Value: 4096}, {Major: 8, Minor: 0, Op: "Write", Value: 8192}, {Major: 8, Minor: 0, Op: "Total", Value: 12288},
		{Major: 253, Minor: 1, Op: "Read", Value: 1},
	}
	v1.BlkioStats.IoServicedRecursive = []cgroups.BlkioStatEntry{{Major: 8, Minor: 0, Op: "Read", Value: 1}, {Major: 8, Minor: 0, Op: "Write", Value: 2}}
	v1.HugetlbStats = map[string]cgroups.HugetlbStats{"2MB": {Usage: 2 << 20, MaxUsage: 4 << 20}, "1GB": {}}
	got := statsFrom(v1)
	want := Stats{CPUUsageNanos: 5e9, MemoryUsage: 100 << 20, MemoryWorkingSet: 70 << 20, MemoryRSS: 40 << 20,
		PageFaults: 1000, MajorPageFaults: 7, SwapUsage: 1 << 20, Pids: 4,
		CPU:    proto.AppCPUStats{UserNanos: 3e9, SystemNanos: 2e9, Periods: 50, ThrottledPeriods: 5, ThrottledNanos: 7e8},
		Memory: proto.AppMemoryStats{Cache: 50 << 20, MappedFile: 5 << 20, Kernel: 2 << 20, MaxUsage: 120 << 20, Failcnt: 3},
		Blkio: []proto.BlkioDevice{
			{Major: 8, Minor: 0, Bytes: map[string]uint64{"Read": 4096, "Write": 8192, "Total": 12288}, Ops: map[string]uint64{"Read": 1, "Write": 2}},
			{Major: 253, Minor: 1, Bytes: map[string]uint64{"Read": 1}},
		},
		Hugetlb: []proto.HugetlbUsage{{PageSize: "1GB"}, {PageSize: "2MB", Usage: 2 << 20, MaxUsage: 4 << 20}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("v1:\n got %+v\nwant %+v", got, want)
	}
	// v1 with limits: memsw minus memory is the swap limit.
	v1.MemoryStats.Usage.Limit = 64 << 20
	v1.MemoryStats.SwapUsage.Limit = 96 << 20
	if got := statsFrom(v1); got.MemoryLimit != 64<<20 || got.SwapLimit != 32<<20 {
		t.Fatalf("v1 limits: %+v", got)
	}

	v2 := cgroups.NewStats()
	v2.CpuStats.CpuUsage.TotalUsage = 2e6
	v2.CpuStats.PSI = &cgroups.PSIStats{Some: cgroups.PSIData{Total: 3e6}, Full: cgroups.PSIData{Total: 1e6}}
	v2.MemoryStats.Usage = cgroups.MemoryData{Usage: 8 << 20, Limit: math.MaxUint64}
	v2.MemoryStats.SwapOnlyUsage = cgroups.MemoryData{Usage: 0, Limit: 16 << 20}
	v2.MemoryStats.Stats = map[string]uint64{"anon": 3 << 20, "inactive_file": 10 << 20, "pgfault": 9, "pgmajfault": 1,
		"file": 6 << 20, "file_mapped": 1 << 20, "kernel": 512 << 10}
	v2.PidsStats.Current = 1
	got = statsFrom(v2)
	// inactive_file above usage (charged elsewhere): the working set is 0, not a wrap-around.
	want = Stats{CPUUsageNanos: 2e6, MemoryUsage: 8 << 20, MemoryWorkingSet: 0, MemoryRSS: 3 << 20, PageFaults: 9, MajorPageFaults: 1, SwapLimit: 16 << 20, Pids: 1,
		Memory:   proto.AppMemoryStats{Cache: 6 << 20, MappedFile: 1 << 20, Kernel: 512 << 10},
		Pressure: &proto.PressureStats{CPU: &proto.PressureTotals{SomeMicros: 3e6, FullMicros: 1e6}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("v2:\n got %+v\nwant %+v", got, want)
	}

	// Fill carries everything into the contract's message.
	var msg proto.AppStats
	got.Fill(&msg)
	if msg.CPUUsageNanos != 2e6 || msg.SwapLimit != 16<<20 || msg.Memory == nil || msg.Memory.Kernel != 512<<10 || msg.CPU == nil ||
		msg.Pressure != got.Pressure {
		t.Fatalf("filled: %+v", msg)
	}
}

// A fake cgroup and /proc: processes, their descriptors and sockets,
// threads from pids.current or, without a pids controller, from
// /proc/<pid>/status, the init's open-files limit, and the memory events
// libcontainer does not read.
func TestProcessesAndMemoryEvents(t *testing.T) {
	root := t.TempDir()
	proc := filepath.Join(root, "proc")
	mk := func(dir string, files map[string]string) {
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
	link := func(target, name string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	mk(proc, map[string]string{
		"10/status": "Name:\tsh\nThreads:\t1\n", "11/status": "Name:\tsrv\nThreads:\t4\n",
		"10/limits": "Limit                     Soft Limit           Hard Limit           Units\n" +
			"Max open files            1024                 4096                 files\n",
	})
	link("/dev/null", filepath.Join(proc, "10/fd/0"))
	link("pipe:[1]", filepath.Join(proc, "10/fd/1"))
	link("socket:[77]", filepath.Join(proc, "11/fd/3"))
	link("socket:[78]", filepath.Join(proc, "11/fd/4"))
	link("/tmp/f", filepath.Join(proc, "11/fd/5"))
	mk(root, map[string]string{
		"v1/pids/app/cgroup.procs":         "10\n11\n12\n", // 12 exited meanwhile
		"v1/memory/app/cgroup.procs":       "10\n11\n12\n",
		"v1/memory/app/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		"v2/app/cgroup.procs":              "10\n11\n",
		"v2/app/memory.events":             "low 0\nhigh 0\nmax 6\noom 2\noom_kill 1\n",
	})

	v1 := cgroupDirs{"pids": filepath.Join(root, "v1/pids/app"), "memory": filepath.Join(root, "v1/memory/app")}
	p := v1.processes(proc, 10, cgroups.PidsStats{Current: 5, Limit: 64})
	want := proto.AppProcessStats{Processes: 3, Threads: 5, ThreadsMax: 64, FileDescriptors: 5, Sockets: 2, OpenFilesSoftLimit: 1024}
	if p == nil || *p != want {
		t.Fatalf("v1: %+v, want %+v", p, want)
	}
	var m proto.AppMemoryStats
	v1.memoryEvents(&m)
	if m.OOMKills != 2 || m.Failcnt != 0 {
		t.Fatalf("v1 memory events: %+v", m)
	}
	// No pids controller: threads from /proc/<pid>/status.
	noPids := cgroupDirs{"memory": filepath.Join(root, "v1/memory/app")}
	if p := noPids.processes(proc, 0, cgroups.PidsStats{}); p == nil || p.Threads != 5 || p.Processes != 3 || p.OpenFilesSoftLimit != 0 {
		t.Fatalf("v1 without pids: %+v", p)
	}
	// v2 without pids.current in the subtree: threads counted as well.
	v2 := cgroupDirs{"": filepath.Join(root, "v2/app")}
	if p := v2.processes(proc, 10, cgroups.PidsStats{Current: 2}); p == nil || p.Threads != 5 || p.Processes != 2 || p.Sockets != 2 {
		t.Fatalf("v2: %+v", p)
	}
	mk(root, map[string]string{"v2/app/pids.current": "6\n"})
	if p := v2.processes(proc, 10, cgroups.PidsStats{Current: 6}); p == nil || p.Threads != 6 {
		t.Fatalf("v2 with pids: %+v", p)
	}
	m = proto.AppMemoryStats{Failcnt: 99}
	v2.memoryEvents(&m)
	if m.OOMKills != 1 || m.Failcnt != 6 {
		t.Fatalf("v2 memory events: %+v", m)
	}
	// A cgroup that is gone: no process numbers.
	if p := (cgroupDirs{"": filepath.Join(root, "gone")}).processes(proc, 0, cgroups.PidsStats{}); p != nil {
		t.Fatalf("gone: %+v", p)
	}
}

// An update keeps the device rules (libcontainer refuses to exec into a
// container whose configuration skips them) and changes neither the
// configuration nor the spec it starts from: Set rolls back to them.
func TestUpdatedConfig(t *testing.T) {
	shares, quota, limit, pids := uint64(1024), int64(10000), int64(64<<20), int64(50)
	major, minor := int64(1), int64(3)
	sp := &specs.Spec{Root: &specs.Root{Path: "/rootfs"}, Process: &specs.Process{}, Linux: &specs.Linux{
		CgroupsPath: "/runclet-test/app",
		Resources: &specs.LinuxResources{
			Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"}},
			CPU:     &specs.LinuxCPU{Shares: &shares, Quota: &quota}, Memory: &specs.LinuxMemory{Limit: &limit}, Pids: &specs.LinuxPids{Limit: &pids},
			Unified: map[string]string{"a": "1"},
		}}}
	old, err := libcontainerConfig("app", sp, false)
	if err != nil {
		t.Fatal(err)
	}
	oldRes := *old.Cgroups.Resources
	newShares, newQuota, newLimit, newPids := uint64(512), int64(20000), int64(32<<20), int64(10)
	cfg, next, err := updatedConfig("app", *old, sp, &specs.LinuxResources{
		CPU:     &specs.LinuxCPU{Shares: &newShares, Quota: &newQuota, Cpus: "0"},
		Memory:  &specs.LinuxMemory{Limit: &newLimit, Swap: &newLimit},
		Pids:    &specs.LinuxPids{Limit: &newPids},
		Unified: map[string]string{"b": "2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := cfg.Cgroups.Resources
	if res.SkipDevices || len(res.Devices) != len(oldRes.Devices) || len(res.Devices) == 0 {
		t.Fatalf("devices after the update: skip %v, %d rules (had %d)", res.SkipDevices, len(res.Devices), len(oldRes.Devices))
	}
	if res.CpuShares != 512 || res.CpuQuota != 20000 || res.CpusetCpus != "0" || res.Memory != 32<<20 || res.MemorySwap != 32<<20 ||
		*res.PidsLimit != 10 || res.Unified["a"] != "1" || res.Unified["b"] != "2" || cfg.Cgroups.Path != old.Cgroups.Path {
		t.Fatalf("%+v", res)
	}
	if *next.Linux.Resources.CPU.Shares != 512 || *next.Linux.Resources.Memory.Limit != 32<<20 || len(next.Linux.Resources.Devices) != 2 {
		t.Fatalf("spec after the update: %+v", next.Linux.Resources)
	}
	if old.Cgroups.Resources.CpuShares != 1024 || *sp.Linux.Resources.CPU.Shares != 1024 || *sp.Linux.Resources.Memory.Limit != 64<<20 {
		t.Fatal("the old configuration or spec was changed in place (Set rolls back to it)")
	}
}

// The process walk on this test process (its descriptors, real /proc).
func BenchmarkProcesses(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	cg := cgroupDirs{"pids": dir}
	for b.Loop() {
		if p := cg.processes("/proc", os.Getpid(), cgroups.PidsStats{Current: 1}); p == nil || p.FileDescriptors == 0 {
			b.Fatalf("%+v", p)
		}
	}
}
