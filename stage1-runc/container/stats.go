package container

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	ocispec "github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// Stats are an app's cgroup statistics, the same for cgroup v1 and v2
// (libcontainer reads either), and what runs in the cgroup. Counters are
// cumulative.
type Stats struct {
	CPUUsageNanos    uint64
	MemoryUsage      uint64
	MemoryWorkingSet uint64 // usage minus inactive file pages, as kubelet computes it
	MemoryRSS        uint64
	MemoryLimit      uint64 // 0: unlimited
	PageFaults       uint64
	MajorPageFaults  uint64
	SwapUsage        uint64 // swap alone
	SwapLimit        uint64 // swap alone; 0: unlimited or unknown
	Pids             uint64

	CPU      proto.AppCPUStats
	Memory   proto.AppMemoryStats
	Process  *proto.AppProcessStats // nil: the process list could not be read
	Blkio    []proto.BlkioDevice
	Hugetlb  []proto.HugetlbUsage
	Pressure *proto.PressureStats // cgroup v2 only
}

// unlimited is where a cgroup limit means "none": v1 reports
// PAGE_COUNTER_MAX pages (9223372036854771712 bytes with 4 KiB pages),
// v2 "max" (read as MaxUint64).
const unlimited = 1 << 62

// Stats reads the app's cgroup statistics through libcontainer, the few
// cgroup files libcontainer does not read (OOM kills, v2 memory.events),
// and its processes' open files in /proc. The cost is libcontainer's
// reads plus one directory listing per process and one readlink per open
// descriptor.
func (a *App) Stats() (Stats, error) {
	a.cgMu.Lock()
	st, err := a.c.Stats()
	a.cgMu.Unlock()
	if err != nil {
		return Stats{}, fmt.Errorf("stats of %s: %w", a.c.ID(), err)
	}
	if st == nil || st.CgroupStats == nil {
		return Stats{}, errdefs.Unavailable("stats of %s: no cgroup statistics", a.c.ID())
	}
	out := statsFrom(st.CgroupStats)
	if state, err := a.c.State(); err == nil {
		cg := cgroupDirs(state.CgroupPaths)
		cg.memoryEvents(&out.Memory)
		out.Process = cg.processes(procRoot, a.Pid(), st.CgroupStats.PidsStats)
	}
	return out, nil
}

// Fill copies s into the stage1 contract's message.
func (s *Stats) Fill(out *proto.AppStats) {
	out.CPUUsageNanos, out.MemoryUsage, out.MemoryWorkingSet, out.MemoryRSS = s.CPUUsageNanos, s.MemoryUsage, s.MemoryWorkingSet, s.MemoryRSS
	out.MemoryLimit, out.PageFaults, out.MajorPageFaults = s.MemoryLimit, s.PageFaults, s.MajorPageFaults
	out.SwapUsage, out.SwapLimit, out.Pids = s.SwapUsage, s.SwapLimit, s.Pids
	cpu, mem := s.CPU, s.Memory
	out.CPU, out.Memory = &cpu, &mem
	out.Process, out.Blkio, out.Hugetlb, out.Pressure = s.Process, s.Blkio, s.Hugetlb, s.Pressure
}

// statsFrom reduces libcontainer's statistics to what the CRI reports.
// memory.stat names differ: v1 has hierarchical total_* counters, v2
// counts hierarchically under the plain names.
func statsFrom(cs *cgroups.Stats) Stats {
	m := cs.MemoryStats
	key := func(v1, v2 string) uint64 {
		if v, ok := m.Stats[v1]; ok {
			return v
		}
		return m.Stats[v2]
	}
	c := cs.CpuStats
	out := Stats{
		CPUUsageNanos:   c.CpuUsage.TotalUsage,
		MemoryUsage:     m.Usage.Usage,
		MemoryRSS:       key("total_rss", "anon"),
		PageFaults:      key("total_pgfault", "pgfault"),
		MajorPageFaults: key("total_pgmajfault", "pgmajfault"),
		SwapUsage:       m.SwapOnlyUsage.Usage,
		Pids:            cs.PidsStats.Current,
		CPU: proto.AppCPUStats{
			UserNanos: c.CpuUsage.UsageInUsermode, SystemNanos: c.CpuUsage.UsageInKernelmode,
			Periods: c.ThrottlingData.Periods, ThrottledPeriods: c.ThrottlingData.ThrottledPeriods,
			ThrottledNanos: c.ThrottlingData.ThrottledTime,
		},
		Memory: proto.AppMemoryStats{
			Cache:      key("total_cache", "file"),
			MappedFile: key("total_mapped_file", "file_mapped"),
			Kernel:     m.KernelUsage.Usage, // v1 memory.kmem.usage_in_bytes
			MaxUsage:   m.Usage.MaxUsage,
			Failcnt:    m.Usage.Failcnt, // v1; v2 from memory.events (memoryEvents)
		},
		Blkio:   blkioFrom(cs.BlkioStats),
		Hugetlb: hugetlbFrom(cs.HugetlbStats),
	}
	if out.Memory.Kernel == 0 {
		out.Memory.Kernel = m.Stats["kernel"] // v2 (5.18+); v1 has no such key
	}
	if inactive := key("total_inactive_file", "inactive_file"); inactive < out.MemoryUsage {
		out.MemoryWorkingSet = out.MemoryUsage - inactive
	}
	if l := m.Usage.Limit; l > 0 && l < unlimited {
		out.MemoryLimit = l
	}
	switch {
	case m.SwapOnlyUsage.Limit > 0 && m.SwapOnlyUsage.Limit < unlimited:
		out.SwapLimit = m.SwapOnlyUsage.Limit // v2: memory.swap.max
	case m.SwapUsage.Limit > 0 && m.SwapUsage.Limit < unlimited && out.MemoryLimit > 0 && m.SwapUsage.Limit >= out.MemoryLimit:
		out.SwapLimit = m.SwapUsage.Limit - out.MemoryLimit // v1: memsw minus memory
	}
	if c.PSI != nil || m.PSI != nil || cs.BlkioStats.PSI != nil {
		out.Pressure = &proto.PressureStats{CPU: psiTotals(c.PSI), Memory: psiTotals(m.PSI), IO: psiTotals(cs.BlkioStats.PSI)}
	}
	return out
}

func psiTotals(p *cgroups.PSIStats) *proto.PressureTotals {
	if p == nil {
		return nil
	}
	return &proto.PressureTotals{SomeMicros: p.Some.Total, FullMicros: p.Full.Total}
}

// blkioFrom groups the recursive byte and operation counts by device, in
// the order the kernel listed the devices.
func blkioFrom(b cgroups.BlkioStats) []proto.BlkioDevice {
	var out []proto.BlkioDevice
	dev := func(e cgroups.BlkioStatEntry) *proto.BlkioDevice {
		for i := range out {
			if out[i].Major == e.Major && out[i].Minor == e.Minor {
				return &out[i]
			}
		}
		out = append(out, proto.BlkioDevice{Major: e.Major, Minor: e.Minor})
		return &out[len(out)-1]
	}
	for _, e := range b.IoServiceBytesRecursive {
		d := dev(e)
		if d.Bytes == nil {
			d.Bytes = map[string]uint64{}
		}
		d.Bytes[e.Op] += e.Value
	}
	for _, e := range b.IoServicedRecursive {
		d := dev(e)
		if d.Ops == nil {
			d.Ops = map[string]uint64{}
		}
		d.Ops[e.Op] += e.Value
	}
	return out
}

func hugetlbFrom(h map[string]cgroups.HugetlbStats) []proto.HugetlbUsage {
	var out []proto.HugetlbUsage
	for _, size := range slices.Sorted(maps.Keys(h)) {
		out = append(out, proto.HugetlbUsage{PageSize: size, Usage: h[size].Usage, MaxUsage: h[size].MaxUsage})
	}
	return out
}

// procRoot is where /proc is (a variable for tests).
var procRoot = "/proc"

// cgroupDirs are an app's cgroup directories: libcontainer's paths, by
// v1 controller, or the unified directory under "".
type cgroupDirs map[string]string

func (cg cgroupDirs) unified() (string, bool) {
	p, ok := cg[""]
	return p, ok
}

// memoryEvents reads what libcontainer leaves out of the memory
// controller: OOM kills (v1 memory.oom_control, v2 memory.events), and
// on v2 the count of times usage hit memory.max (memory.events max),
// v1's memory.failcnt.
func (cg cgroupDirs) memoryEvents(m *proto.AppMemoryStats) {
	if dir, ok := cg.unified(); ok {
		ev, _ := fsutil.ReadKeyValues(filepath.Join(dir, "memory.events"))
		m.OOMKills, m.Failcnt = ev["oom_kill"], ev["max"]
		return
	}
	if dir, ok := cg["memory"]; ok {
		oc, _ := fsutil.ReadKeyValues(filepath.Join(dir, "memory.oom_control"))
		m.OOMKills = oc["oom_kill"]
	}
}

// processes counts the cgroup's processes (its own cgroup.procs, as
// cadvisor does), their threads, open descriptors and sockets, and reads
// the init's soft open-files limit. Processes that exit meanwhile are
// skipped. nil when the process list cannot be read.
func (cg cgroupDirs) processes(proc string, initPid int, pids cgroups.PidsStats) *proto.AppProcessStats {
	dir, v2 := cg.unified()
	hasPids := v2
	if !v2 {
		var ok bool
		if dir, hasPids = cg["pids"]; !hasPids {
			for _, c := range []string{"devices", "memory", "cpu", "freezer"} {
				if dir, ok = cg[c]; ok {
					break
				}
			}
			if !ok {
				return nil
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	out := &proto.AppProcessStats{Threads: pids.Current, ThreadsMax: pids.Limit}
	countThreads := !hasPids
	if v2 {
		// Without the pids controller in the subtree libcontainer counted
		// processes, not threads.
		if _, err := os.Stat(filepath.Join(dir, "pids.current")); err != nil {
			countThreads = true
		}
	}
	if countThreads {
		out.Threads = 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		pid := strings.TrimSpace(line)
		if pid == "" {
			continue
		}
		out.Processes++
		fds, sockets := countFds(filepath.Join(proc, pid, "fd"))
		out.FileDescriptors += fds
		out.Sockets += sockets
		if countThreads {
			out.Threads += statusThreads(filepath.Join(proc, pid, "status"))
		}
	}
	if initPid > 0 {
		out.OpenFilesSoftLimit = openFilesSoftLimit(filepath.Join(proc, strconv.Itoa(initPid), "limits"))
	}
	return out
}

// countFds counts the entries of a /proc/<pid>/fd directory and those
// that link to a socket ("socket:[inode]").
func countFds(dir string) (fds, sockets uint64) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, 0
	}
	names, _ := f.Readdirnames(-1) // unsorted, no lstat
	f.Close()
	buf := make([]byte, 64)
	for _, n := range names {
		fds++
		l, err := unix.Readlink(dir+"/"+n, buf)
		if err == nil && bytes.HasPrefix(buf[:l], []byte("socket:")) {
			sockets++
		}
	}
	return fds, sockets
}

// statusThreads is the Threads: line of /proc/<pid>/status, 0 if gone.
func statusThreads(file string) uint64 {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// openFilesSoftLimit reads the soft "Max open files" of /proc/<pid>/limits
// ("Max open files  1024  4096  files"); 0 if unknown or unlimited.
func openFilesSoftLimit(file string) uint64 {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// Update changes the app's cgroup resources while it is created or
// running (libcontainer's Set, as `runc update`): the fields of r that
// are set replace those of the app's spec, the others stay. The merged
// spec goes through specconv as at creation, so the new configuration
// keeps the device rules (exec checks them) and libcontainer's state
// (runc state) records what runs.
func (a *App) Update(r *specs.LinuxResources) error {
	if r == nil {
		return errdefs.InvalidArgument("update %s: no resources", a.c.ID())
	}
	a.cgMu.Lock()
	defer a.cgMu.Unlock()
	cfg, sp, err := updatedConfig(a.c.ID(), a.c.Config(), a.spec, r)
	if err != nil {
		return fmt.Errorf("update %s: %w", a.c.ID(), err)
	}
	if err := a.c.Set(cfg); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return errdefs.FailedPrecondition("update %s: the container is not running", a.c.ID())
		}
		return fmt.Errorf("update %s: %w", a.c.ID(), err)
	}
	a.spec = sp
	return nil
}

// updatedConfig is cfg with the cgroup configuration of sp with r merged
// in, and that spec; cfg and sp are not changed (Set rolls back to the
// container's own configuration when it fails).
func updatedConfig(id string, cfg configs.Config, sp *specs.Spec, r *specs.LinuxResources) (configs.Config, *specs.Spec, error) {
	if sp.Linux == nil || cfg.Cgroups == nil {
		return cfg, nil, errdefs.FailedPrecondition("the container has no cgroup configuration")
	}
	next, linux := *sp, *sp.Linux
	linux.Resources = ocispec.MergeResources(linux.Resources, r)
	next.Linux = &linux
	full, err := libcontainerConfig(id, &next, cfg.Cgroups.Systemd)
	if err != nil {
		return cfg, nil, err
	}
	cfg.Cgroups = full.Cgroups
	return cfg, &next, nil
}
