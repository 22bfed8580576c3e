package pod

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// AppStats are one app's cgroup statistics as its supervisor read them
// (stage1 contract method Stats).
type AppStats = proto.AppStats

// PressureTotals are cumulative stall times in an AppStats.
type PressureTotals = proto.PressureTotals

// statsTimeout bounds one stats call to a supervisor: stats are read
// often and must not pile up behind a stuck supervisor.
const statsTimeout = 10 * time.Second

// AppStats asks a pod's supervisor for its apps' cgroup statistics
// (appIDs empty: every app it has). Apps the supervisor does not have
// (exited and removed, or never made) are left out.
func (m *Manager) AppStats(ctx context.Context, podID string, appIDs []string) ([]AppStats, error) {
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	var res proto.StatsResult
	if err := m.call(ctx, podID, proto.MethodStats, proto.StatsParams{Names: appIDs}, &res); err != nil {
		return nil, err
	}
	return res.Apps, nil
}

// PodStats are a pod's own statistics: its cgroup (everything its apps
// and their execs use) and its network namespace. A part that could not
// be read is left unset.
type PodStats struct {
	Timestamp time.Time
	// CPU, Memory and Processes come from the pod's cgroup (nil when
	// the controller is not there or the cgroup is gone).
	CPU       *CPUStats
	Memory    *MemoryStats
	Processes *uint64
	// Network is nil for host-network pods.
	Network *NetworkStats
}

// CPUStats is cumulative CPU time.
type CPUStats struct {
	UsageNanos uint64
}

// MemoryStats are memory counters as kubelet reads them.
type MemoryStats struct {
	Usage, WorkingSet, RSS  uint64
	Limit                   uint64 // 0: unlimited
	PageFaults, MajorFaults uint64
}

// NetworkStats are the pod's interfaces (loopback left out).
type NetworkStats struct {
	DefaultInterface string
	Interfaces       []InterfaceStats
}

// InterfaceStats are one interface's counters from /proc/net/dev.
type InterfaceStats struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// PodStats reads a pod's cgroup (from cgroupfs, v1 or v2, whichever
// holds each controller) and the counters of its network interfaces
// (read inside its network namespace). p is the pod's record as the
// caller knows it; nothing is read from the pod's directory.
func (m *Manager) PodStats(ctx context.Context, p *Pod) (*PodStats, error) {
	out := &PodStats{Timestamp: time.Now().UTC()}
	if p.CgroupParent != "" {
		h, err := cgroupHierarchiesOnce()
		if err != nil {
			return nil, err
		}
		path := cgroupfsPath(p.CgroupParent)
		out.CPU, out.Memory, out.Processes = h.cpu(path), h.memory(path), h.pids(path)
	}
	if p.NetNS != "" {
		var data []byte
		err := network.WithNetNS(p.NetNS, func() error {
			// /proc/self/net is the thread group leader's namespace;
			// this thread's is /proc/thread-self/net.
			var err error
			data, err = os.ReadFile("/proc/thread-self/net/dev")
			return err
		})
		if err != nil {
			return out, nil // the namespace went away meanwhile: no network numbers
		}
		ifs := parseNetDev(data)
		def := "eth0"
		if p.Attachment != nil && p.Attachment.IfName != "" {
			def = p.Attachment.IfName
		}
		out.Network = &NetworkStats{DefaultInterface: def, Interfaces: ifs}
	}
	return out, nil
}

// parseNetDev reads /proc/net/dev: two header lines, then
// "name: rx bytes packets errs drop fifo frame compressed multicast
// tx bytes packets errs ...".
func parseNetDev(data []byte) []InterfaceStats {
	var out []InterfaceStats
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if name == "lo" || len(f) < 12 {
			continue
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		out = append(out, InterfaceStats{
			Name:    name,
			RxBytes: n(0), RxPackets: n(1), RxErrors: n(2), RxDropped: n(3),
			TxBytes: n(8), TxPackets: n(9), TxErrors: n(10), TxDropped: n(11),
		})
	}
	return out
}

// FsUsage is how much of a filesystem a directory tree takes, and what
// the filesystem holds.
type FsUsage struct {
	Timestamp time.Time
	// Mountpoint names the filesystem (a directory on it) for kubelet.
	Mountpoint string
	Bytes      uint64 // allocated blocks, as du counts them
	Inodes     uint64
	// The filesystem the tree is on (statfs): its device (a block
	// device's /dev path, else the mount source, else "major:minor"),
	// size, and inodes in all and free. Zero when statfs failed.
	Device                  string
	Capacity                uint64
	InodesTotal, InodesFree uint64
}

// WritableLayerUsage walks an app's writable layer (its overlay upper
// dir) and counts its bytes and inodes; hard links count once; and reads
// the filesystem it is on. It walks every call: callers that ask often
// cache it. An app whose layer is gone (removed meanwhile) is NotFound.
func (m *Manager) WritableLayerUsage(podID, appID string) (FsUsage, error) {
	upper := filepath.Join(m.l.AppDir(podID, appID), "fs", "upper")
	u := FsUsage{Timestamp: time.Now().UTC(), Mountpoint: m.l.podsDir()}
	var st unix.Stat_t
	if err := unix.Lstat(upper, &st); errors.Is(err, fs.ErrNotExist) {
		return u, errdefs.NotFound("writable layer of app %s in pod %s: %w", appID, podID, err)
	} else if err == nil {
		u.Device = deviceName(st.Dev)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(upper, &sfs); err == nil {
		u.Capacity = sfs.Blocks * uint64(sfs.Bsize)
		u.InodesTotal, u.InodesFree = sfs.Files, sfs.Ffree
	}
	b, i, err := diskUsage(upper)
	u.Bytes, u.Inodes = b, i
	return u, err
}

// Device names, by device number: they do not change while the host runs
// (a device number reused after a disk is swapped is an accepted risk).
var devNames sync.Map // uint64 -> string

// BlockDeviceName is the /dev path of a block device ("/dev/sda"), from
// /sys/dev/block/MAJOR:MINOR/uevent, else "MAJOR:MINOR". Names are cached.
func BlockDeviceName(major, minor uint64) string {
	return deviceName(unix.Mkdev(uint32(major), uint32(minor)))
}

// deviceName names the device a filesystem is on: a block device's /dev
// path, else the source of a mount of that device in mountinfo ("tmpfs",
// "overlay"), else "MAJOR:MINOR".
func deviceName(dev uint64) string {
	if n, ok := devNames.Load(dev); ok {
		return n.(string)
	}
	majmin := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	name := majmin
	if b, err := os.ReadFile("/sys/dev/block/" + majmin + "/uevent"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "DEVNAME="); ok && v != "" {
				name = "/dev/" + v
				break
			}
		}
	}
	if name == majmin {
		if f, err := os.Open("/proc/self/mountinfo"); err == nil {
			if src := mountSource(f, majmin); src != "" {
				name = src
			}
			f.Close()
		}
	}
	devNames.Store(dev, name)
	return name
}

// mountSource finds the source of the first mount of device majmin in
// mountinfo ("id parent major:minor root mountpoint options ... - fstype
// source superoptions").
func mountSource(r io.Reader, majmin string) string {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != majmin {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				return fields[i+2]
			}
		}
	}
	return ""
}

// diskUsage sums the allocated size and counts the inodes of a tree,
// staying on its filesystem. Entries that vanish while it walks are
// skipped.
func diskUsage(root string) (bytes, inodes uint64, err error) {
	var dev uint64
	seen := map[uint64]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if p == root {
			dev = st.Dev
		} else if st.Dev != dev {
			return fs.SkipDir
		}
		if st.Nlink > 1 && !d.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		inodes++
		bytes += uint64(st.Blocks) * 512
		return nil
	})
	return bytes, inodes, err
}

// The pod's cgroup, read from cgroupfs. stage0 has no libcontainer: these
// are the few files kubelet's numbers come from.

// cgroupHierarchies says where each v1 controller's hierarchy is mounted
// and where the v2 tree is, if anywhere.
type cgroupHierarchies struct {
	v1      map[string]string
	unified string
}

var hierarchies struct {
	sync.Mutex
	h  cgroupHierarchies
	ok bool
}

// cgroupHierarchiesOnce reads where the cgroup hierarchies are the first
// time it succeeds: they do not move while the host runs, and mountinfo
// grows with every pod (its pinned namespaces, its apps' rootfs).
func cgroupHierarchiesOnce() (cgroupHierarchies, error) {
	hierarchies.Lock()
	defer hierarchies.Unlock()
	if hierarchies.ok {
		return hierarchies.h, nil
	}
	h, err := readCgroupHierarchies()
	if err != nil {
		return h, err
	}
	hierarchies.h, hierarchies.ok = h, true
	return h, nil
}

func readCgroupHierarchies() (cgroupHierarchies, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return cgroupHierarchies{}, err
	}
	defer f.Close()
	return parseCgroupMounts(f)
}

// parseCgroupMounts reads mountinfo: "... mountpoint options ... - fstype
// source superoptions"; a v1 hierarchy's controllers are in its super
// options ("rw,cpu,cpuacct").
func parseCgroupMounts(r io.Reader) (cgroupHierarchies, error) {
	h := cgroupHierarchies{v1: map[string]string{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 >= len(fields) {
			continue
		}
		mnt := fields[4]
		switch fields[sep+1] {
		case "cgroup2":
			if h.unified == "" {
				h.unified = mnt
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				if _, ok := h.v1[opt]; !ok && opt != "rw" && opt != "ro" {
					h.v1[opt] = mnt
				}
			}
		}
	}
	return h, sc.Err()
}

// cgroupfsPath is a cgroup parent's path in cgroupfs. A systemd slice
// name ("kubepods-besteffort-pod1.slice") expands the way systemd nests
// slices: /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice.
func cgroupfsPath(parent string) string {
	if strings.HasPrefix(parent, "/") || !strings.HasSuffix(parent, ".slice") {
		return filepath.Join("/", parent)
	}
	if parent == "-.slice" {
		return "/"
	}
	name := strings.TrimSuffix(parent, ".slice")
	path, prefix := "", ""
	for _, part := range strings.Split(name, "-") {
		if part == "" {
			continue
		}
		prefix += part
		path += "/" + prefix + ".slice"
		prefix += "-"
	}
	return path
}

// v1dir is the directory of path in the hierarchy of controller, "" if
// that controller has no v1 hierarchy.
func (h cgroupHierarchies) v1dir(controller, path string) string {
	if mnt, ok := h.v1[controller]; ok {
		return filepath.Join(mnt, path)
	}
	return ""
}

func (h cgroupHierarchies) v2dir(path string) string {
	if h.unified == "" {
		return ""
	}
	return filepath.Join(h.unified, path)
}

func (h cgroupHierarchies) cpu(path string) *CPUStats {
	if dir := h.v1dir("cpuacct", path); dir != "" {
		if v, err := readUint(filepath.Join(dir, "cpuacct.usage")); err == nil {
			return &CPUStats{UsageNanos: v}
		}
		return nil
	}
	if dir := h.v2dir(path); dir != "" {
		if kv, err := fsutil.ReadKeyValues(filepath.Join(dir, "cpu.stat")); err == nil {
			if v, ok := kv["usage_usec"]; ok {
				return &CPUStats{UsageNanos: v * 1000}
			}
		}
	}
	return nil
}

func (h cgroupHierarchies) memory(path string) *MemoryStats {
	if dir := h.v1dir("memory", path); dir != "" {
		usage, err := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
		if err != nil {
			return nil
		}
		kv, _ := fsutil.ReadKeyValues(filepath.Join(dir, "memory.stat"))
		limit, _ := readUint(filepath.Join(dir, "memory.limit_in_bytes"))
		return memoryStats(usage, limit, kv["total_inactive_file"], kv["total_rss"], kv["total_pgfault"], kv["total_pgmajfault"])
	}
	if dir := h.v2dir(path); dir != "" {
		usage, err := readUint(filepath.Join(dir, "memory.current"))
		if err != nil {
			return nil // no memory controller in this subtree
		}
		kv, _ := fsutil.ReadKeyValues(filepath.Join(dir, "memory.stat"))
		limit, _ := readUint(filepath.Join(dir, "memory.max")) // "max" does not parse: 0
		return memoryStats(usage, limit, kv["inactive_file"], kv["anon"], kv["pgfault"], kv["pgmajfault"])
	}
	return nil
}

func memoryStats(usage, limit, inactiveFile, rss, faults, majFaults uint64) *MemoryStats {
	m := &MemoryStats{Usage: usage, RSS: rss, PageFaults: faults, MajorFaults: majFaults}
	if inactiveFile < usage {
		m.WorkingSet = usage - inactiveFile
	}
	if limit > 0 && limit < 1<<62 {
		m.Limit = limit
	}
	return m
}

func (h cgroupHierarchies) pids(path string) *uint64 {
	dir := h.v1dir("pids", path)
	if dir == "" {
		dir = h.v2dir(path)
	}
	if dir == "" {
		return nil
	}
	v, err := readUint(filepath.Join(dir, "pids.current"))
	if err != nil {
		return nil
	}
	return &v
}

func readUint(file string) (uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}
