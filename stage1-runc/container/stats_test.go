package container

import (
	"math"
	"testing"

	"github.com/opencontainers/cgroups"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestStatsFromCgroupV1AndV2(t *testing.T) {
	v1 := cgroups.NewStats()
	v1.CpuStats.CpuUsage.TotalUsage = 5e9
	v1.MemoryStats.Usage = cgroups.MemoryData{Usage: 100 << 20, Limit: 9223372036854771712}
	v1.MemoryStats.SwapUsage = cgroups.MemoryData{Usage: 101 << 20, Limit: 9223372036854771712}
	v1.MemoryStats.SwapOnlyUsage = cgroups.MemoryData{Usage: 1 << 20}
	v1.MemoryStats.Stats = map[string]uint64{
		"rss": 1, "inactive_file": 2, "pgfault": 3, // the cgroup's own: not these
		"total_rss": 40 << 20, "total_inactive_file": 30 << 20, "total_pgfault": 1000, "total_pgmajfault": 7,
	}
	v1.PidsStats.Current = 4
	got := statsFrom(v1)
	want := Stats{CPUUsageNanos: 5e9, MemoryUsage: 100 << 20, MemoryWorkingSet: 70 << 20, MemoryRSS: 40 << 20,
		PageFaults: 1000, MajorPageFaults: 7, SwapUsage: 1 << 20, Pids: 4}
	if got != want {
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
	v2.MemoryStats.Usage = cgroups.MemoryData{Usage: 8 << 20, Limit: math.MaxUint64}
	v2.MemoryStats.SwapOnlyUsage = cgroups.MemoryData{Usage: 0, Limit: 16 << 20}
	v2.MemoryStats.Stats = map[string]uint64{"anon": 3 << 20, "inactive_file": 10 << 20, "pgfault": 9, "pgmajfault": 1}
	v2.PidsStats.Current = 1
	got = statsFrom(v2)
	// inactive_file above usage (charged elsewhere): the working set is 0, not a wrap-around.
	want = Stats{CPUUsageNanos: 2e6, MemoryUsage: 8 << 20, MemoryWorkingSet: 0, MemoryRSS: 3 << 20, PageFaults: 9, MajorPageFaults: 1, SwapLimit: 16 << 20, Pids: 1}
	if got != want {
		t.Fatalf("v2:\n got %+v\nwant %+v", got, want)
	}
}

func TestMergeResourcesIntoLibcontainer(t *testing.T) {
	pids := int64(50)
	res := &cgroups.Resources{CpuShares: 1024, CpuQuota: 10000, CpuPeriod: 100000, Memory: 64 << 20, MemorySwap: 64 << 20, PidsLimit: &pids,
		HugetlbLimit: []*cgroups.HugepageLimit{{Pagesize: "2MB", Limit: 1}}, Unified: map[string]string{"a": "1"}}
	orig := res.HugetlbLimit
	shares, quota, limit, newPids := uint64(512), int64(20000), int64(32<<20), int64(10)
	mergeResources(res, &specs.LinuxResources{
		CPU:            &specs.LinuxCPU{Shares: &shares, Quota: &quota, Cpus: "0-1"},
		Memory:         &specs.LinuxMemory{Limit: &limit, Swap: &limit},
		Pids:           &specs.LinuxPids{Limit: &newPids},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 0}, {Pagesize: "1GB", Limit: 0}},
		Unified:        map[string]string{"b": "2"},
	})
	if res.CpuShares != 512 || res.CpuWeight != cgroups.ConvertCPUSharesToCgroupV2Value(512) || res.CpuQuota != 20000 || res.CpuPeriod != 100000 ||
		res.CpusetCpus != "0-1" || res.Memory != 32<<20 || res.MemorySwap != 32<<20 || *res.PidsLimit != 10 ||
		len(res.HugetlbLimit) != 2 || res.HugetlbLimit[0].Limit != 0 || res.Unified["a"] != "1" || res.Unified["b"] != "2" {
		t.Fatalf("%+v", res)
	}
	if orig[0].Limit != 1 || pids != 50 {
		t.Fatal("the old configuration was changed in place (Set rolls back to it)")
	}
}
