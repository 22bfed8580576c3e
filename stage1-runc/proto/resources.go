package proto

import (
	"maps"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MergeResources is what UpdateApp does to an app's resources: the fields
// of r that are set (non-nil pointers, non-empty strings, listed hugepage
// sizes and unified keys) replace those of old; everything else, devices
// included, stays. The supervisor applies it to the app's cgroup and
// stage0 to the bundle's config.json, so both say the same. old is not
// changed.
func MergeResources(old, r *specs.LinuxResources) *specs.LinuxResources {
	if old == nil {
		old = &specs.LinuxResources{}
	}
	out := *old
	if c := r.CPU; c != nil {
		cpu := specs.LinuxCPU{}
		if out.CPU != nil {
			cpu = *out.CPU
		}
		if c.Shares != nil {
			cpu.Shares = c.Shares
		}
		if c.Quota != nil {
			cpu.Quota = c.Quota
		}
		if c.Period != nil {
			cpu.Period = c.Period
		}
		if c.Cpus != "" {
			cpu.Cpus = c.Cpus
		}
		if c.Mems != "" {
			cpu.Mems = c.Mems
		}
		out.CPU = &cpu
	}
	if m := r.Memory; m != nil {
		mem := specs.LinuxMemory{}
		if out.Memory != nil {
			mem = *out.Memory
		}
		if m.Limit != nil {
			mem.Limit = m.Limit
		}
		if m.Swap != nil {
			mem.Swap = m.Swap
		}
		if m.Reservation != nil {
			mem.Reservation = m.Reservation
		}
		out.Memory = &mem
	}
	if r.Pids != nil && r.Pids.Limit != nil {
		p := *r.Pids
		out.Pids = &p
	}
	for _, h := range r.HugepageLimits {
		i := slices.IndexFunc(out.HugepageLimits, func(l specs.LinuxHugepageLimit) bool { return l.Pagesize == h.Pagesize })
		if i >= 0 {
			out.HugepageLimits = slices.Clone(out.HugepageLimits)
			out.HugepageLimits[i] = h
		} else {
			out.HugepageLimits = append(slices.Clip(out.HugepageLimits), h)
		}
	}
	if len(r.Unified) > 0 {
		u := maps.Clone(out.Unified)
		if u == nil {
			u = map[string]string{}
		}
		maps.Copy(u, r.Unified)
		out.Unified = u
	}
	return &out
}
