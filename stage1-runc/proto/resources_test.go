package proto

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestMergeResourcesKeepsWhatIsNotSet(t *testing.T) {
	shares, period, limit, swap := uint64(1024), uint64(100000), int64(64<<20), int64(64<<20)
	major := int64(1)
	old := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: &major, Access: "rwm"}},
		CPU:     &specs.LinuxCPU{Shares: &shares, Period: &period, Cpus: "0-3"},
		Memory:  &specs.LinuxMemory{Limit: &limit, Swap: &swap},
		Unified: map[string]string{"memory.high": "1"},
	}
	newLimit, quota := int64(32<<20), int64(50000)
	got := MergeResources(old, &specs.LinuxResources{
		CPU:     &specs.LinuxCPU{Quota: &quota},
		Memory:  &specs.LinuxMemory{Limit: &newLimit, Swap: &newLimit},
		Unified: map[string]string{"memory.max": "2"},
	})
	if len(got.Devices) != 2 || *got.CPU.Shares != 1024 || *got.CPU.Period != 100000 || *got.CPU.Quota != 50000 || got.CPU.Cpus != "0-3" ||
		*got.Memory.Limit != 32<<20 || *got.Memory.Swap != 32<<20 || got.Unified["memory.high"] != "1" || got.Unified["memory.max"] != "2" {
		t.Fatalf("%+v", got)
	}
	if *old.Memory.Limit != 64<<20 || old.CPU.Quota != nil || len(old.Unified) != 1 {
		t.Fatal("old was changed")
	}
	if got := MergeResources(nil, &specs.LinuxResources{}); got == nil || got.CPU != nil {
		t.Fatalf("from nothing: %+v", got)
	}
}
