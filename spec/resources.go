package spec

import (
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// Cgroup naming. The systemd form is runc's "slice:prefix:name", which runc
// turns into the scope "<prefix>-<name>.scope" under the slice.
const (
	cgroupfsRoot      = "/runclet"
	systemdSlice      = "runclet.slice"
	systemdPrefix     = "runclet"
	defaultDeviceMode = "rwm"
)

// hugepageSize is a page size as the hugetlb controller names it.
var hugepageSize = regexp.MustCompile(`^[1-9][0-9]*[KMGTP]B$`)

// cgroupsPath places the app's cgroup below the pod's.
func cgroupsPath(app App, pod Pod) (string, error) {
	leaf := app.ID
	if leaf == "" {
		leaf = app.Name
	}
	parent := pod.CgroupParent
	if pod.SystemdCgroup {
		if parent == "" {
			parent = systemdSlice
		}
		// kubelet's systemd driver gives the pod's slice as its path
		// (/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice),
		// critest as /test.slice: the unit is the last element, and the
		// path must be where systemd puts that unit.
		if strings.HasPrefix(parent, "/") {
			base := path.Base(parent)
			if expandSlice(base) != parent {
				return "", errdefs.InvalidArgument("systemd cgroup parent %q: slice %s lives at %s, not there", parent, base, expandSlice(base))
			}
			parent = base
		}
		if !strings.HasSuffix(parent, ".slice") || strings.ContainsAny(parent, "/:") {
			return "", errdefs.InvalidArgument("systemd cgroup parent %q is not a slice name", parent)
		}
		return parent + ":" + systemdPrefix + ":" + pod.ID + "-" + leaf, nil
	}
	if parent == "" {
		parent = path.Join(cgroupfsRoot, pod.ID)
	}
	if !path.IsAbs(parent) {
		return "", errdefs.InvalidArgument("cgroup parent %q is not an absolute path", parent)
	}
	return path.Join(parent, leaf), nil
}

// expandSlice is the cgroup path systemd gives slice unit name: a-b.slice
// is nested in a.slice ("" when name is not a slice name).
func expandSlice(name string) string {
	stem, ok := strings.CutSuffix(name, ".slice")
	if !ok || stem == "" || strings.ContainsAny(stem, "/:") {
		return ""
	}
	p := ""
	for i := range stem {
		if stem[i] == '-' {
			p += "/" + stem[:i] + ".slice"
		}
	}
	return p + "/" + name
}

func i64(v int64) *int64 { return &v }

// defaultDeviceRules deny every device and allow the ones every container
// needs, the same list runc always allows, so the spec says what the app
// gets whatever runtime reads it.
func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	allow := func(major, minor int64) specs.LinuxDeviceCgroup {
		r := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(major), Access: defaultDeviceMode}
		if minor >= 0 {
			r.Minor = i64(minor)
		}
		return r
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: defaultDeviceMode},
		allow(1, 3),    // /dev/null
		allow(1, 5),    // /dev/zero
		allow(1, 7),    // /dev/full
		allow(1, 8),    // /dev/random
		allow(1, 9),    // /dev/urandom
		allow(5, 0),    // /dev/tty
		allow(5, 2),    // /dev/ptmx
		allow(136, -1), // /dev/pts/*
	}
}

// checkDevice validates a device and fills its defaults.
func checkDevice(d Device) (Device, error) {
	if !path.IsAbs(d.HostPath) {
		return d, errdefs.InvalidArgument("device host path %q is not absolute", d.HostPath)
	}
	if d.ContainerPath == "" {
		d.ContainerPath = d.HostPath
	}
	p, err := cleanContainerPath("device container path", d.ContainerPath)
	if err != nil {
		return d, err
	}
	d.ContainerPath = p
	if d.Permissions == "" {
		d.Permissions = defaultDeviceMode
	}
	if strings.Trim(d.Permissions, "rwm") != "" {
		return d, errdefs.InvalidArgument("device %s: permissions %q are not a combination of r, w and m", d.HostPath, d.Permissions)
	}
	if d.Type != "c" && d.Type != "b" {
		return d, errdefs.InvalidArgument("device %s: type %q is not c or b", d.HostPath, d.Type)
	}
	if d.Major < 0 || d.Minor < 0 {
		return d, errdefs.InvalidArgument("device %s: negative device number", d.HostPath)
	}
	return d, nil
}

// deviceList merges the devices an app gets: every host device when
// privileged, then the requested ones, which win on the same container path.
func deviceList(app App) ([]Device, error) {
	var in []Device
	if app.Privileged {
		in = append(in, app.HostDevices...)
	}
	in = append(in, app.Devices...)
	var out []Device
	index := map[string]int{}
	for _, d := range in {
		d, err := checkDevice(d)
		if err != nil {
			return nil, err
		}
		if i, ok := index[d.ContainerPath]; ok {
			out[i] = d
			continue
		}
		index[d.ContainerPath] = len(out)
		out = append(out, d)
	}
	return out, nil
}

// devices returns the device nodes to create and the device cgroup rules.
// Privileged apps may use any device, like containerd's privileged mode.
func devices(app App) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	list, err := deviceList(app)
	if err != nil {
		return nil, nil, err
	}
	rules := defaultDeviceRules()
	if app.Privileged {
		rules = []specs.LinuxDeviceCgroup{{Allow: false, Access: defaultDeviceMode}, {Allow: true, Access: defaultDeviceMode}}
	}
	var nodes []specs.LinuxDevice
	for _, d := range list {
		nodes = append(nodes, linuxDevice(d))
		if !app.Privileged {
			rules = append(rules, specs.LinuxDeviceCgroup{
				Allow: true, Type: d.Type, Major: i64(d.Major), Minor: i64(d.Minor), Access: d.Permissions,
			})
		}
	}
	return nodes, rules, nil
}

func linuxDevice(d Device) specs.LinuxDevice {
	uid, gid := d.UID, d.GID
	ld := specs.LinuxDevice{Path: d.ContainerPath, Type: d.Type, Major: d.Major, Minor: d.Minor, UID: &uid, GID: &gid}
	if perm := d.FileMode.Perm(); perm != 0 {
		ld.FileMode = &perm
	}
	return ld
}

// LinuxResources maps limits onto the spec's cgroup resources, checking
// them (negative values, swap below memory, hugepage sizes); unset limits
// stay unset, devices are left out and OOMScoreAdj (the process's) is
// ignored. Generate uses it for a new app, and resource updates for the
// limits that change.
func LinuxResources(r Resources) (*specs.LinuxResources, error) {
	for _, v := range []struct {
		name string
		val  int64
	}{{"cpu shares", r.CPUShares}, {"cpu period", r.CPUPeriod}, {"memory limit", r.MemoryLimit}} {
		if v.val < 0 {
			return nil, errdefs.InvalidArgument("%s %d is negative", v.name, v.val)
		}
	}
	out := &specs.LinuxResources{
		CPU:     cpuResources(r),
		Unified: maps.Clone(r.Unified),
	}
	mem, err := memoryResources(r)
	if err != nil {
		return nil, err
	}
	out.Memory = mem
	if r.PidsLimit != 0 {
		out.Pids = &specs.LinuxPids{Limit: i64(r.PidsLimit)}
	}
	if out.HugepageLimits, err = hugepageLimits(r.HugepageLimits); err != nil {
		return nil, err
	}
	return out, nil
}

func cpuResources(r Resources) *specs.LinuxCPU {
	c := &specs.LinuxCPU{Cpus: r.CPUsetCPUs, Mems: r.CPUsetMems}
	if r.CPUShares > 0 {
		shares := uint64(r.CPUShares)
		c.Shares = &shares
	}
	if r.CPUQuota != 0 {
		c.Quota = i64(r.CPUQuota)
	}
	if r.CPUPeriod > 0 {
		period := uint64(r.CPUPeriod)
		c.Period = &period
	}
	if *c == (specs.LinuxCPU{}) {
		return nil
	}
	return c
}

func memoryResources(r Resources) (*specs.LinuxMemory, error) {
	if r.MemoryLimit == 0 && r.MemorySwapLimit <= 0 {
		return nil, nil
	}
	m := &specs.LinuxMemory{}
	if r.MemoryLimit > 0 {
		m.Limit = i64(r.MemoryLimit)
	}
	if r.MemorySwapLimit > 0 {
		if r.MemoryLimit > 0 && r.MemorySwapLimit < r.MemoryLimit {
			return nil, errdefs.InvalidArgument("memory+swap limit %d is below the memory limit %d", r.MemorySwapLimit, r.MemoryLimit)
		}
		m.Swap = i64(r.MemorySwapLimit)
	}
	return m, nil
}

// hugepageLimits turns the size → limit map into the spec's list, sorted by
// page size name so specs are deterministic.
func hugepageLimits(in map[string]uint64) ([]specs.LinuxHugepageLimit, error) {
	var out []specs.LinuxHugepageLimit
	for _, size := range slices.Sorted(maps.Keys(in)) {
		if !hugepageSize.MatchString(size) {
			return nil, errdefs.InvalidArgument("hugepage size %q is not of the form 2MB or 1GB", size)
		}
		out = append(out, specs.LinuxHugepageLimit{Pagesize: size, Limit: in[size]})
	}
	return out, nil
}

// MergeResources is what a resource update does to an app's resources
// (the stage1 contract's UpdateApp, NRI adjustments): the fields of r
// that are set (non-nil pointers, non-empty strings, listed hugepage
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
