package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
)

// psCommand lists the processes of an app (or of every app of a pod),
// read from the app's cgroup and /proc: host PIDs, as `runc ps` shows.
func psCommand(g *globals) *cobra.Command {
	var out outputFlag
	c := &cobra.Command{
		Use:     "ps POD [APP]",
		Aliases: []string{"top"},
		Short:   "List the processes of a pod's apps (from their cgroups)",
		Example: "  runclet ps web\n  runclet top web nginx",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			p, err := m.FindPod(args[0])
			if err != nil {
				return err
			}
			p, apps, err := m.PodStatus(cmd.Context(), p.ID)
			if err != nil {
				return err
			}
			if len(args) == 2 {
				_, a, err := resolveApp(cmd.Context(), m, args)
				if err != nil {
					return err
				}
				apps = []*pod.App{a}
			}
			if err := podRunning(p); err != nil {
				return err
			}
			var procs []procInfo
			for _, a := range apps {
				if a.State != pod.AppRunning || a.Pid <= 0 {
					continue
				}
				dir := cgroupDirOf(a.Pid)
				if dir == "" {
					continue
				}
				for _, pid := range cgroupPids(dir) {
					if pi, err := readProc(pid); err == nil {
						pi.App = a.Name
						procs = append(procs, pi)
					}
				}
			}
			if asJSON {
				if procs == nil {
					procs = []procInfo{}
				}
				return printJSON(cmd.OutOrStdout(), procs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tPID\tPPID\tUID\tSTATE\tTIME\tCOMMAND")
			for _, pr := range procs {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", pr.App, pr.Pid, pr.PPid, pr.UID, pr.State, (time.Duration(pr.CPUNanos) * time.Nanosecond).Round(time.Second), pr.Command)
			}
			return tw.Flush()
		},
	}
	out.add(c)
	return c
}

type procInfo struct {
	App      string `json:"app"`
	Pid      int    `json:"pid"`
	PPid     int    `json:"ppid"`
	UID      int    `json:"uid"`
	State    string `json:"state"`
	CPUNanos int64  `json:"cpuNanos"`
	Command  string `json:"command"`
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func readProc(pid int) (procInfo, error) {
	pi := procInfo{Pid: pid}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pi, err
	}
	// comm is in parentheses and may hold spaces: the fields follow the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return pi, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return pi, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	pi.State = f[0]
	pi.PPid, _ = strconv.Atoi(f[1])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	pi.CPUNanos = (utime + stime) * int64(time.Second) / clockTicks
	if st, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		pi.UID = int(st.Sys().(*syscall.Stat_t).Uid)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	pi.Command = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	if pi.Command == "" {
		pi.Command = "[" + s[strings.IndexByte(s, '(')+1:i] + "]"
	}
	return pi, nil
}

// portCommand lists a pod's published ports, as `podman port`.
func portCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "port POD [PORT[/PROTO]]",
		Short:   "List a pod's port mappings, or the host address of one port",
		Example: "  runclet port web\n  runclet port web 80",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			p, err := m.FindPod(args[0])
			if err != nil {
				return err
			}
			wantPort, wantProto := "", ""
			if len(args) == 2 {
				wantPort, wantProto, _ = strings.Cut(args[1], "/")
				if _, err := strconv.ParseUint(wantPort, 10, 16); err != nil {
					return errdefs.InvalidArgument("port %q: want PORT[/tcp|udp|sctp]", args[1])
				}
			}
			found := false
			for _, pm := range p.Ports {
				proto := strings.ToLower(pm.Protocol)
				if proto == "" {
					proto = "tcp"
				}
				if wantPort != "" && (strconv.Itoa(int(pm.ContainerPort)) != wantPort || wantProto != "" && wantProto != proto) {
					continue
				}
				found = true
				host := pm.HostIP
				if host == "" {
					host = "0.0.0.0"
				}
				if wantPort != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s:%d\n", host, pm.HostPort)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%d/%s -> %s:%d\n", pm.ContainerPort, proto, host, pm.HostPort)
				}
			}
			if wantPort != "" && !found {
				return errdefs.NotFound("pod %s publishes no port %s", p.ID, args[1])
			}
			return nil
		},
	}
}

// statsRow is one pod's line of `runclet stats`.
type statsRow struct {
	Pod         string    `json:"pod"`
	Name        string    `json:"name"`
	Time        time.Time `json:"time"`
	CPUPercent  float64   `json:"cpuPercent"`
	CPUNanos    uint64    `json:"cpuNanos"`
	MemoryUsage uint64    `json:"memoryWorkingSet"`
	MemoryLimit uint64    `json:"memoryLimit,omitempty"`
	Pids        uint64    `json:"pids"`
	NetRx       uint64    `json:"netRxBytes"`
	NetTx       uint64    `json:"netTxBytes"`
}

func statsCommand(g *globals) *cobra.Command {
	var out outputFlag
	var noStream bool
	var interval time.Duration
	c := &cobra.Command{
		Use:   "stats [POD...]",
		Short: "Show live CPU, memory, process and network use of running pods",
		Long: `Show live CPU, memory, process and network use of running pods (all of
them when none is named). CPU % is over the last interval (100% = one
core). On a terminal the table is redrawn every interval with a sparkline
of each pod's recent CPU and memory; --no-stream prints one sample and
exits. -o json prints a JSON array with --no-stream, else one JSON object
per pod and interval (JSON lines).`,
		Example: "  runclet stats\n  runclet stats --no-stream -o json web",
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			if interval < 100*time.Millisecond {
				return errdefs.InvalidArgument("--interval %s: want 100ms or more", interval)
			}
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			var pods []*pod.Pod
			if len(args) == 0 {
				all, err := m.ListPods()
				if err != nil {
					return err
				}
				for _, p := range all {
					if p.State == pod.PodReady {
						pods = append(pods, p)
					}
				}
			}
			for _, a := range args {
				p, err := m.FindPod(a)
				if err != nil {
					return err
				}
				if err := podRunning(p); err != nil {
					return err
				}
				pods = append(pods, p)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w := cmd.OutOrStdout()
			f, isFile := w.(*os.File)
			redraw := !noStream && !asJSON && isFile && term.IsTerminal(int(f.Fd()))
			prev := sampleStats(ctx, m, pods)
			history := map[string][2][]float64{}
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
				cur := sampleStats(ctx, m, pods)
				rows := statsRows(pods, prev, cur)
				prev = cur
				switch {
				case asJSON && noStream:
					return printJSON(w, rows)
				case asJSON:
					enc := json.NewEncoder(w)
					for _, r := range rows {
						if err := enc.Encode(r); err != nil {
							return err
						}
					}
				default:
					if redraw {
						fmt.Fprint(w, "\x1b[H\x1b[2J")
					}
					for _, r := range rows {
						h := history[r.Pod]
						h[0] = appendLast(h[0], r.CPUPercent, 20)
						h[1] = appendLast(h[1], float64(r.MemoryUsage), 20)
						history[r.Pod] = h
					}
					if err := printStats(w, rows, history, redraw); err != nil {
						return err
					}
				}
				if noStream {
					return nil
				}
			}
		},
	}
	out.add(c)
	c.Flags().BoolVar(&noStream, "no-stream", false, "print one sample and exit")
	c.Flags().DurationVar(&interval, "interval", time.Second, "time between samples")
	return c
}

func appendLast(s []float64, v float64, n int) []float64 {
	s = append(s, v)
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// sparkline draws values as block characters scaled to their maximum.
func sparkline(vals []float64) string {
	const bars = "▁▂▃▄▅▆▇█"
	runes := []rune(bars)
	max := 0.0
	for _, v := range vals {
		if v > max {
			max = v
		}
	}
	var b strings.Builder
	for _, v := range vals {
		i := 0
		if max > 0 {
			i = int(v / max * float64(len(runes)-1))
		}
		b.WriteRune(runes[i])
	}
	return b.String()
}

func sampleStats(ctx context.Context, m *pod.Manager, pods []*pod.Pod) map[string]*pod.PodStats {
	out := map[string]*pod.PodStats{}
	for _, p := range pods {
		if st, err := m.PodStats(ctx, p); err == nil {
			out[p.ID] = st
		}
	}
	return out
}

func statsRows(pods []*pod.Pod, prev, cur map[string]*pod.PodStats) []statsRow {
	rows := []statsRow{}
	for _, p := range pods {
		st := cur[p.ID]
		if st == nil {
			continue
		}
		r := statsRow{Pod: p.ID, Name: p.Name, Time: st.Timestamp}
		if st.CPU != nil {
			r.CPUNanos = st.CPU.UsageNanos
			if old := prev[p.ID]; old != nil && old.CPU != nil && st.CPU.UsageNanos >= old.CPU.UsageNanos {
				if wall := st.Timestamp.Sub(old.Timestamp); wall > 0 {
					r.CPUPercent = float64(st.CPU.UsageNanos-old.CPU.UsageNanos) / float64(wall.Nanoseconds()) * 100
				}
			}
		}
		if st.Memory != nil {
			r.MemoryUsage, r.MemoryLimit = st.Memory.WorkingSet, st.Memory.Limit
		}
		if st.Processes != nil {
			r.Pids = *st.Processes
		}
		if st.Network != nil {
			for _, i := range st.Network.Interfaces {
				r.NetRx += i.RxBytes
				r.NetTx += i.TxBytes
			}
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows
}

func printStats(w io.Writer, rows []statsRow, history map[string][2][]float64, spark bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	head := "POD ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tPIDS\tNET RX / TX"
	if spark {
		head += "\tCPU\tMEM"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rows {
		limit := "-"
		if r.MemoryLimit > 0 {
			limit = humanSize(int64(r.MemoryLimit))
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f%%\t%s / %s\t%d\t%s / %s", r.Pod[:12], r.Name, r.CPUPercent, humanSize(int64(r.MemoryUsage)), limit, r.Pids, humanSize(int64(r.NetRx)), humanSize(int64(r.NetTx)))
		if spark {
			h := history[r.Pod]
			fmt.Fprintf(tw, "\t%s\t%s", sparkline(h[0]), sparkline(h[1]))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
