package container

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/runtime/errdefs"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// Stats are an app's cgroup statistics, the same for cgroup v1 and v2
// (libcontainer reads either). Counters are cumulative.
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
}

// unlimited is where a cgroup limit means "none": v1 reports
// PAGE_COUNTER_MAX pages (9223372036854771712 bytes with 4 KiB pages),
// v2 "max" (read as MaxUint64).
const unlimited = 1 << 62

// Stats reads the app's cgroup statistics.
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
	return statsFrom(st.CgroupStats), nil
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
	out := Stats{
		CPUUsageNanos:   cs.CpuStats.CpuUsage.TotalUsage,
		MemoryUsage:     m.Usage.Usage,
		MemoryRSS:       key("total_rss", "anon"),
		PageFaults:      key("total_pgfault", "pgfault"),
		MajorPageFaults: key("total_pgmajfault", "pgmajfault"),
		SwapUsage:       m.SwapOnlyUsage.Usage,
		Pids:            cs.PidsStats.Current,
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
	return out
}

// Update changes the app's cgroup resources while it is created or
// running (libcontainer's Set, as `runc update`): the fields of r that
// are set replace the current ones, the others stay; devices are not
// touched. libcontainer's state (runc state) records the new values.
func (a *App) Update(r *specs.LinuxResources) error {
	if r == nil {
		return errdefs.InvalidArgument("update %s: no resources", a.c.ID())
	}
	cfg := a.c.Config()
	if cfg.Cgroups == nil || cfg.Cgroups.Resources == nil {
		return errdefs.FailedPrecondition("update %s: the container has no cgroup configuration", a.c.ID())
	}
	// Config is a shallow copy: work on copies, so a failed Set leaves
	// the container's own configuration (which Set rolls back to) as it was.
	cg := *cfg.Cgroups
	res := *cfg.Cgroups.Resources
	cg.Resources = &res
	cfg.Cgroups = &cg
	mergeResources(&res, r)
	res.SkipDevices = true // device rules are not ours to change here
	a.cgMu.Lock()
	defer a.cgMu.Unlock()
	if err := a.c.Set(cfg); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return errdefs.FailedPrecondition("update %s: the container is not running", a.c.ID())
		}
		return fmt.Errorf("update %s: %w", a.c.ID(), err)
	}
	if a.spec.Linux != nil {
		a.spec.Linux.Resources = proto.MergeResources(a.spec.Linux.Resources, r)
	}
	return nil
}

// mergeResources applies the set fields of r to libcontainer's resources.
func mergeResources(res *cgroups.Resources, r *specs.LinuxResources) {
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			res.CpuShares = *c.Shares
			res.CpuWeight = cgroups.ConvertCPUSharesToCgroupV2Value(*c.Shares) // what v2 writes
		}
		// Quota and period are written together (systemd and fs2 need
		// both); one given alone keeps the other's current value.
		if c.Quota != nil {
			res.CpuQuota = *c.Quota
		}
		if c.Period != nil {
			res.CpuPeriod = *c.Period
		}
		if c.Cpus != "" {
			res.CpusetCpus = c.Cpus
		}
		if c.Mems != "" {
			res.CpusetMems = c.Mems
		}
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			res.Memory = *m.Limit
		}
		if m.Swap != nil {
			res.MemorySwap = *m.Swap
		}
		if m.Reservation != nil {
			res.MemoryReservation = *m.Reservation
		}
	}
	if r.Pids != nil && r.Pids.Limit != nil {
		limit := *r.Pids.Limit
		res.PidsLimit = &limit
	}
	for _, h := range r.HugepageLimits {
		i := slices.IndexFunc(res.HugetlbLimit, func(l *cgroups.HugepageLimit) bool { return l.Pagesize == h.Pagesize })
		l := &cgroups.HugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit}
		if i >= 0 {
			res.HugetlbLimit = slices.Clone(res.HugetlbLimit)
			res.HugetlbLimit[i] = l
		} else {
			res.HugetlbLimit = append(slices.Clip(res.HugetlbLimit), l)
		}
	}
	if len(r.Unified) > 0 {
		u := maps.Clone(res.Unified)
		if u == nil {
			u = map[string]string{}
		}
		maps.Copy(u, r.Unified)
		res.Unified = u
	}
}
