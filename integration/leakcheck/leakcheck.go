// Package leakcheck counts what a runclet instance left on the host after
// a suite: mounts and pinned namespaces under its roots, pod directories,
// veths, IP allocations, cgroups and processes. A harness takes a snapshot
// before the runtime starts and asks for the leaks after it removed every
// pod through the runtime itself, before it cleans anything up by hand: a
// harness that cleaned up first would turn a runtime's leak into a pass.
package leakcheck

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/runclet/runclet/integration/hostcgroup"
	"github.com/runclet/runclet/integration/mountinfo"
)

// Scope says where a runclet instance keeps what it makes.
type Scope struct {
	Root, RunRoot string // data and run roots
	Bridge        string // the pod bridge; veths still on it are leaks
	// Pods, when set, names every pod the instance made (a PodWatcher);
	// their cgroups below PodCgroupParent (e.g. "/runclet") count.
	// Cgroups of other runclet instances on the same host do not.
	Pods            *PodWatcher
	PodCgroupParent string
	// SystemdSlices: the pods' cgroups are systemd slices, <parent>/runclet-<pod>.slice
	// (cgroup.driver = "systemd", PodCgroupParent "/runclet.slice").
	SystemdSlices bool
	// CgroupProcRoots are cgroup paths below which a cgroup counts only
	// while it holds processes (a kubelet's own QoS cgroups stay there).
	CgroupProcRoots []string
	// IPAMDirs hold host-local IPAM allocations (one file per address).
	IPAMDirs []string
}

// Snapshot is the set of objects present at one time.
type Snapshot map[string]bool

// Take records the objects of scope that exist now.
func Take(s Scope) Snapshot {
	snap := Snapshot{}
	for _, o := range objects(s) {
		snap[o] = true
	}
	return snap
}

// Leaks lists, sorted, the objects of scope that exist now and did not
// when before was taken.
func (before Snapshot) Leaks(s Scope) []string {
	var out []string
	for _, o := range objects(s) {
		if !before[o] {
			out = append(out, o)
		}
	}
	sort.Strings(out)
	return out
}

func objects(s Scope) []string {
	var out []string
	out = append(out, mountsUnder(s.Root, s.RunRoot)...)
	out = append(out, entries("pod dir", filepath.Join(s.Root, "pods"))...)
	out = append(out, links(s.Bridge)...)
	for _, d := range s.IPAMDirs {
		out = append(out, addresses(d)...)
	}
	var pods []string
	if s.Pods != nil {
		var overflow bool
		if pods, overflow = s.Pods.IDs(); overflow {
			out = append(out, "pod watch overflowed: some pods' cgroups were not checked")
		}
	}
	if s.SystemdSlices {
		slices := make([]string, len(pods))
		for i, id := range pods {
			slices[i] = "runclet-" + id + ".slice"
		}
		pods = slices
	}
	out = append(out, cgroups(s.PodCgroupParent, pods, s.CgroupProcRoots)...)
	out = append(out, processes(s.Root, s.RunRoot)...)
	return out
}

// mountsUnder lists mount points at or below any of dirs (pinned
// namespaces are bind mounts under the run root).
func mountsUnder(dirs ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"mountinfo unreadable: " + err.Error()}
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := mountinfo.Unescape(f[4])
		for _, d := range dirs {
			if d != "" && (mp == d || strings.HasPrefix(mp, d+"/")) {
				out = append(out, "mount "+mp)
				break
			}
		}
	}
	return out
}

func entries(kind, dir string) []string {
	es, _ := os.ReadDir(dir)
	var out []string
	for _, e := range es {
		out = append(out, kind+" "+filepath.Join(dir, e.Name()))
	}
	return out
}

// links lists the interfaces still enslaved to bridge: the host ends of
// pods' veths.
func links(bridge string) []string {
	if bridge == "" {
		return nil
	}
	es, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range es {
		if master, _ := os.Readlink(filepath.Join("/sys/class/net", e.Name(), "master")); filepath.Base(master) == bridge {
			out = append(out, "link "+e.Name()+" on "+bridge)
		}
	}
	return out
}

// addresses lists host-local IPAM allocation files (named for the address).
func addresses(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() && (strings.Count(e.Name(), ".") == 3 || strings.Contains(e.Name(), ":")) {
			out = append(out, "address "+p)
		}
		return nil
	})
	return out
}

// cgroups lists every cgroup of the pods below parent and every cgroup
// with processes below procRoots, in each mounted hierarchy.
func cgroups(parent string, pods, procRoots []string) []string {
	var out []string
	for _, mp := range hostcgroup.Mounts() {
		for _, id := range pods {
			filepath.WalkDir(filepath.Join(mp, parent, id), func(d string, e fs.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					out = append(out, "cgroup "+d)
				}
				return nil
			})
		}
		for _, p := range procRoots {
			filepath.WalkDir(filepath.Join(mp, p), func(d string, e fs.DirEntry, err error) error {
				if err != nil || !e.IsDir() {
					return nil
				}
				if procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs")); len(bytes.TrimSpace(procs)) > 0 {
					out = append(out, fmt.Sprintf("cgroup %s with processes %s", d, strings.Join(strings.Fields(string(procs)), ",")))
				}
				return nil
			})
		}
	}
	return out
}

// processes lists processes whose command line names one of the roots:
// pod supervisors and namespace holders are started with their run dir.
func processes(roots ...string) []string {
	es, _ := os.ReadDir("/proc")
	var out []string
	self := strconv.Itoa(os.Getpid())
	for _, e := range es {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		for _, r := range roots {
			if r != "" && strings.Contains(string(cmdline), r) {
				out = append(out, fmt.Sprintf("process %s %s", e.Name(), strings.Join(args, " ")))
				break
			}
		}
	}
	return out
}
