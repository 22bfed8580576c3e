package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// appInspect is one app as `inspect` shows it: its record, and what a
// person debugging it needs to find by hand otherwise.
type appInspect struct {
	*pod.App
	// Bundle is the OCI bundle: `runc --root StateRoot state ID` and
	// `runc run -b Bundle` work on it.
	Bundle    string `json:"bundle"`
	StateRoot string `json:"runcStateRoot"`
	// CgroupPath is the app's cgroup as the spec names it; CgroupDir is
	// its directory on this host (while the app runs).
	CgroupPath string `json:"cgroupPath,omitempty"`
	CgroupDir  string `json:"cgroupDir,omitempty"`
	// Pids are the processes in the app's cgroup.
	Pids []int `json:"pids"`
	// Config is the app's OCI runtime spec (config.json).
	Config *specs.Spec `json:"config,omitempty"`
}

type podInspect struct {
	*pod.Pod
	Dir    string        `json:"dir"`
	RunDir string        `json:"runDir"`
	IPs    []string      `json:"ips"`
	Apps   []*appInspect `json:"apps"`
}

func inspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect POD [APP] | APP-ID",
		Short: "Print everything about a pod or an app as one JSON document",
		Long: `Print everything about a pod or an app as one JSON document: its
configuration and state, network (IPs, ports), volumes, processes, log path,
cgroup path and the OCI bundle path that runc can use.

inspect POD prints the pod with all its apps; inspect POD APP one app; an
app ID (or unique prefix of 4+ characters) alone finds the app in any pod.`,
		Example: "  runclet inspect web\n  runclet inspect web nginx | jq .pids",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if len(args) == 2 {
				p, a, err := resolveApp(ctx, m, args)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), inspectApp(m, p, a))
			}
			p, perr := m.FindPod(args[0])
			if perr == nil {
				fresh, apps, err := m.PodStatus(ctx, p.ID)
				if err != nil {
					return err
				}
				pi := &podInspect{Pod: fresh, Dir: m.Layout().PodDir(p.ID), RunDir: m.Layout().RunDir(p.ID), IPs: []string{}, Apps: []*appInspect{}}
				if fresh.Attachment != nil && !fresh.Inactive() {
					for _, ip := range fresh.Attachment.PodIPs() {
						pi.IPs = append(pi.IPs, ip)
					}
				}
				for _, a := range apps {
					pi.Apps = append(pi.Apps, inspectApp(m, fresh, a))
				}
				return printJSON(cmd.OutOrStdout(), pi)
			}
			if !errdefs.IsNotFound(perr) {
				return perr
			}
			p, a, err := findAppAnywhere(ctx, m, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), inspectApp(m, p, a))
		},
	}
}

// findAppAnywhere resolves an app ID or unique ID prefix (4+ characters)
// across every pod.
func findAppAnywhere(ctx context.Context, m *pod.Manager, id string) (*pod.Pod, *pod.App, error) {
	pods, err := m.ListPods()
	if err != nil {
		return nil, nil, err
	}
	var fp *pod.Pod
	var fa *pod.App
	for _, p := range pods {
		apps, err := m.Layout().ListApps(p.ID)
		if err != nil {
			continue
		}
		for _, a := range apps {
			if a.ID == id || len(id) >= 4 && strings.HasPrefix(a.ID, id) {
				if fa != nil {
					return nil, nil, errdefs.InvalidArgument("app ID prefix %q is ambiguous: %s and %s", id, fa.ID, a.ID)
				}
				fp, fa = p, a
			}
		}
	}
	if fa == nil {
		return nil, nil, errdefs.NotFound("no pod named %q and no app with that ID", id)
	}
	return resolveApp(ctx, m, []string{fp.ID, fa.ID})
}

func inspectApp(m *pod.Manager, p *pod.Pod, a *pod.App) *appInspect {
	ai := &appInspect{App: a, Bundle: m.Layout().Bundle(p.ID, a.ID), StateRoot: m.Layout().StateRoot(), Pids: []int{}}
	if b, err := os.ReadFile(filepath.Join(ai.Bundle, "config.json")); err == nil {
		var s specs.Spec
		if json.Unmarshal(b, &s) == nil {
			ai.Config = &s
			if s.Linux != nil {
				ai.CgroupPath = s.Linux.CgroupsPath
			}
		}
	}
	if a.State == pod.AppRunning && a.Pid > 0 {
		if dir := cgroupDirOf(a.Pid); dir != "" {
			ai.CgroupDir = dir
			ai.Pids = cgroupPids(dir)
		}
	}
	return ai
}

// cgroupDirOf is the directory of pid's cgroup: in the unified hierarchy
// (cgroup v2), else in the pids controller's (v1).
func cgroupDirOf(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	v2 := cgroupV2()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 && parts[0] == "0" {
			return filepath.Join("/sys/fs/cgroup", parts[2])
		}
		if !v2 && strings.Contains(","+parts[1]+",", ",pids,") {
			return filepath.Join("/sys/fs/cgroup/pids", parts[2])
		}
	}
	return ""
}

// cgroupPids lists the processes of a cgroup and its children.
func cgroupPids(dir string) []int {
	pids := []int{}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
		return nil
	})
	return pids
}

func cgroupV2() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// versionInfo is what `runclet version` reports.
type versionInfo struct {
	Client          string `json:"client"`
	GoVersion       string `json:"goVersion"`
	Stage1          string `json:"stage1"`
	Stage1Path      string `json:"stage1Path"`
	Stage1Contract  int    `json:"stage1Contract,omitempty"`
	ClientContract  int    `json:"clientContract"`
	Libcontainer    string `json:"libcontainer"`
	Stage1GoVersion string `json:"stage1GoVersion,omitempty"`
	CgroupDriver    string `json:"cgroupDriver"`
	CgroupVersion   string `json:"cgroupVersion"`
	OS              string `json:"os"`
}

func versionCommand(g *globals) *cobra.Command {
	var out outputFlag
	c := &cobra.Command{
		Use:     "version",
		Short:   "Print the versions of runclet, its stage1, the stage1 contract, libcontainer, Go and the cgroup setup",
		Example: "  runclet version\n  runclet version -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			v := versionInfo{Client: version, GoVersion: runtime.Version(), ClientContract: proto.Version,
				CgroupDriver: g.cfg.Cgroup.Driver, CgroupVersion: "v1", OS: runtime.GOOS + "/" + runtime.GOARCH,
				Stage1: "not found", Libcontainer: "unknown"}
			if cgroupV2() {
				v.CgroupVersion = "v2"
			} else if st := (unix.Statfs_t{}); unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
				v.CgroupVersion = "v1 (hybrid, v2 at /sys/fs/cgroup/unified)"
			}
			if bi, ok := debug.ReadBuildInfo(); ok && version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				v.Client = bi.Main.Version
			}
			if path, err := g.stage1Path(); err == nil {
				v.Stage1Path = path
				stage1Version(&v, path)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "runclet:          %s\n", v.Client)
			fmt.Fprintf(w, "stage1-runc:      %s (%s)\n", v.Stage1, v.Stage1Path)
			if v.Stage1Contract != 0 {
				fmt.Fprintf(w, "stage1 contract:  %d (runclet speaks %d)\n", v.Stage1Contract, v.ClientContract)
			} else {
				fmt.Fprintf(w, "stage1 contract:  runclet speaks %d\n", v.ClientContract)
			}
			fmt.Fprintf(w, "libcontainer:     %s\n", v.Libcontainer)
			fmt.Fprintf(w, "go:               %s", v.GoVersion)
			if v.Stage1GoVersion != "" && v.Stage1GoVersion != v.GoVersion {
				fmt.Fprintf(w, " (stage1: %s)", v.Stage1GoVersion)
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "cgroup:           %s, driver %s\n", v.CgroupVersion, v.CgroupDriver)
			fmt.Fprintf(w, "os/arch:          %s\n", v.OS)
			return nil
		},
	}
	out.add(c)
	return c
}

// stage1Version asks the stage1 binary for its version and contract and
// reads the libcontainer version it was built with from its build info.
func stage1Version(v *versionInfo, path string) {
	if bi, err := buildinfo.ReadFile(path); err == nil {
		v.Stage1GoVersion = bi.GoVersion
		for _, d := range bi.Deps {
			if d.Path == "github.com/opencontainers/runc" {
				v.Libcontainer = "runc " + d.Version
				if d.Replace != nil {
					v.Libcontainer += " => " + d.Replace.Path + " " + d.Replace.Version
				}
			}
		}
	}
	out, err := exec.Command(path, "version").Output()
	if err != nil {
		v.Stage1 = "unknown (" + err.Error() + ")"
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if rest, ok := strings.CutPrefix(line, "stage1-runc "); ok {
			v.Stage1 = strings.TrimSpace(rest)
		}
		if rest, ok := strings.CutPrefix(line, "contract: "); ok {
			v.Stage1Contract, _ = strconv.Atoi(strings.TrimSpace(rest))
		}
	}
}

func configShowCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Short:   "Print the effective configuration (defaults, then the file, then --root/--run-root) as TOML",
		Example: "  runclet config show\n  runclet --config /etc/runclet/test.toml config show",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "# effective configuration: defaults + %s + flags\n", g.configPath)
			return toml.NewEncoder(w).Encode(g.cfg)
		},
	}
}
