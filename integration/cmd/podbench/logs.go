package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/runclet/runclet/integration/testimage"
)

const linegenPad = 90 // bytes of padding after "<n> "

// linegen returns base with /usr/local/bin/linegen added.
func linegen(base v1.Image) (v1.Image, error) {
	l, err := testimage.GoProgram("linegen", testimage.LinegenSource)
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(base, l)
}

// linegenBytes is how many bytes "linegen lines" writes.
func linegenBytes(lines int) int64 {
	var n int64
	for i := range lines {
		n += int64(len(strconv.Itoa(i))) + 1 + linegenPad + 1
	}
	return n
}

// LogReport is the log throughput section.
type LogReport struct {
	Runs     int      `json:"runs"`
	Lines    int      `json:"lines"`
	AppBytes int64    `json:"app_bytes"` // what linegen writes to stdout
	Rows     []LogRow `json:"rows"`
}

// LogRow is one tool's time for the whole output, one way of measuring.
type LogRow struct {
	Tool     string  `json:"tool"`
	Measure  string  `json:"measure"`
	Stats    Stats   `json:"stats"`
	MBps     float64 `json:"median_mb_per_s"`               // app bytes / median, 1 MB = 1e6 bytes
	Ratio    float64 `json:"median_over_runclet,omitempty"` // >1: runclet faster
	LogBytes int64   `json:"log_bytes,omitempty"`           // the verified log file
}

var logNotes = []string{
	"logs: wall = from the start command (runclet app start, crictl start) until a poll of the app's state (runclet app status, crictl inspect; a CLI process every 50 ms) sees it exited; runclet records the exit after draining the app's pipes into the log; in the warm-up run both logs held every line as soon as the exit was seen",
	"logs: app life = the runtime's own startedAt to finishedAt of the app (started to reaped; the app blocks on its stdout pipe, so this is the pipeline's pace): no CLI start, no poll granularity",
	"logs: runclet run --rm = the whole one-shot pod (netns, CNI, supervisor, app, removal) while the foreground CLI copies the log to its stdout (/dev/null)",
	"logs: pods and containers are made and removed untimed around each run; runclet's CRI log is written by its pod's stage1-runc supervisor, containerd's by the containerd daemon (cri plugin) from the shim's fifo; both are files under the same temporary directory; the containerd container runs with RuntimeDefault seccomp",
}

func (b *bench) logThroughput(ctx context.Context, runs, lines int) (*LogReport, error) {
	n := strconv.Itoa(lines)
	rep := &LogReport{Runs: runs, Lines: lines, AppBytes: linegenBytes(lines)}
	logBytes := map[string]int64{}

	var podID, appID string
	runclet := tool{name: "runclet", parts: []string{"app life"},
		before: func(ctx context.Context, _ int) error {
			out, err := b.do(ctx, b.runcletArgs("app", "sandbox")...)
			if err != nil {
				return err
			}
			podID = b.pod(lastLine(out))
			out, err = b.do(ctx, b.runcletArgs("app", "add", podID, linegenImage, "--", "/usr/local/bin/linegen", n)...)
			appID = lastLine(out)
			return err
		},
		timed: func(ctx context.Context, _ int) ([]time.Duration, error) {
			start := time.Now()
			if _, err := b.do(ctx, b.runcletArgs("app", "start", podID, appID)...); err != nil {
				return nil, err
			}
			var a runcletApp
			err := poll(ctx, 10*time.Minute, func() (bool, error) {
				var err error
				a, err = b.runcletApp(ctx, podID, appID)
				return a.State == "exited", err
			})
			seen := time.Now()
			if err == nil && a.ExitCode != 0 {
				err = fmt.Errorf("linegen exited with %d: %s %s", a.ExitCode, a.Reason, a.Message)
			}
			return []time.Duration{seen.Sub(start), a.FinishedAt.Sub(a.StartedAt)}, err
		},
		after: func(ctx context.Context, i int) error {
			if i < 0 {
				a, err := b.runcletApp(ctx, podID, appID)
				if err != nil {
					return err
				}
				if logBytes["runclet"], err = verifyLines(a.LogPath, lines, true); err != nil {
					return err
				}
			}
			_, err := b.do(ctx, b.runcletArgs("rm", podID)...)
			return err
		},
	}

	rawOut := filepath.Join(b.dir, "run-rm.out")
	runRm := tool{name: "runclet run --rm",
		timed: func(ctx context.Context, i int) ([]time.Duration, error) {
			var out *os.File // nil: /dev/null
			if i < 0 {       // the warm-up keeps it, to check it
				f, err := os.Create(rawOut)
				if err != nil {
					return nil, err
				}
				defer f.Close()
				out = f
			}
			start := time.Now()
			err := runTo(ctx, out, b.runcletArgs("run", "--rm", linegenImage, "--", "/usr/local/bin/linegen", n)...)
			return []time.Duration{time.Since(start)}, err
		},
		after: func(ctx context.Context, i int) error {
			if i >= 0 {
				return nil
			}
			_, err := verifyLines(rawOut, lines, false)
			if err != nil {
				return fmt.Errorf("its stdout: %w", err)
			}
			return os.Remove(rawOut)
		},
	}

	var criPod, criCtr, criLogs string
	cri := tool{name: "containerd cri (crictl)", parts: []string{"app life"},
		before: func(ctx context.Context, i int) error {
			name := fmt.Sprintf("logs-%d", i+1)
			criLogs = filepath.Join(b.dir, "crilogs", name)
			var cfg string
			var err error
			if criPod, cfg, err = b.criPod(ctx, name, criLogs); err != nil {
				return err
			}
			criCtr, err = b.criContainer(ctx, criPod, cfg, "linegen", linegenImage, "/usr/local/bin/linegen", n)
			return err
		},
		timed: func(ctx context.Context, _ int) ([]time.Duration, error) {
			start := time.Now()
			if _, err := b.do(ctx, b.crictlArgs("start", criCtr)...); err != nil {
				return nil, err
			}
			var st criStatus
			err := poll(ctx, 10*time.Minute, func() (bool, error) {
				var err error
				st, err = b.criInspect(ctx, criCtr)
				return st.State == "CONTAINER_EXITED", err
			})
			seen := time.Now()
			if err == nil && st.ExitCode != 0 {
				err = fmt.Errorf("linegen exited with %d: %s %s", st.ExitCode, st.Reason, st.Message)
			}
			return []time.Duration{seen.Sub(start), st.FinishedAt.Sub(st.StartedAt)}, err
		},
		after: func(ctx context.Context, i int) error {
			if i < 0 {
				var err error
				if logBytes["cri"], err = verifyLines(filepath.Join(criLogs, "linegen.log"), lines, true); err != nil {
					return err
				}
			}
			if _, err := b.do(ctx, b.crictlArgs("rmp", "-f", criPod)...); err != nil {
				return err
			}
			return os.RemoveAll(criLogs) // kubelet's job
		},
	}

	rows, err := alternate(ctx, "log throughput", runs, []tool{runclet, runRm, cri})
	if err != nil {
		return nil, err
	}
	// rows: runclet, its app life, run --rm, cri, its app life.
	mbps := func(st Stats) float64 { return float64(rep.AppBytes) / 1e6 / st.Median.Seconds() }
	row := func(tool, measure string, r Row, base *Row, logBytes int64) LogRow {
		lr := LogRow{Tool: tool, Measure: measure, Stats: r.Stats, MBps: mbps(r.Stats), LogBytes: logBytes}
		if base != nil {
			lr.Ratio = float64(r.Stats.Median) / float64(base.Stats.Median)
		}
		return lr
	}
	rep.Rows = []LogRow{
		row("runclet", "wall: app start -> exited", rows[0], nil, logBytes["runclet"]),
		row("containerd cri (crictl)", "wall: crictl start -> exited", rows[3], &rows[0], logBytes["cri"]),
		row("runclet", "app life (runtime's record)", rows[1], nil, 0),
		row("containerd cri (crictl)", "app life (runtime's record)", rows[4], &rows[1], 0),
		row("runclet run --rm", "wall: whole one-shot pod", rows[2], nil, 0),
	}
	return rep, nil
}

// runcletApp is what "runclet app status -o json" says.
type runcletApp struct {
	State      string    `json:"state"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	ExitCode   int       `json:"exitCode"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message"`
	LogPath    string    `json:"logPath"`
}

func (b *bench) runcletApp(ctx context.Context, pod, app string) (runcletApp, error) {
	var a runcletApp
	out, err := b.do(ctx, b.runcletArgs("app", "status", pod, app, "-o", "json")...)
	if err == nil {
		err = json.Unmarshal([]byte(out), &a)
	}
	return a, err
}

// runTo runs a command with its stdout going to out (nil: /dev/null).
func runTo(ctx context.Context, out *os.File, argv ...string) error {
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Stderr = &stderr
	if out != nil {
		c.Stdout = out
	}
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, tail(stderr.Bytes()))
	}
	return nil
}

// verifyLines checks that path holds exactly what "linegen lines" writes,
// in order: as it is, or (cri) as one stdout F record per line of a CRI
// log. It returns the file's size.
func verifyLines(path string, lines int, cri bool) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	pad := bytes.Repeat([]byte{'x'}, linegenPad)
	var num []byte
	k := 0
	for ; ; k++ {
		line, err := r.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%s: line %d: %w", path, k+1, err)
		}
		line = line[:len(line)-1]
		content := line
		if cri { // <timestamp> <stream> <tag> <content>
			fields := bytes.SplitN(line, []byte(" "), 4)
			if len(fields) != 4 {
				return 0, fmt.Errorf("%s: line %d is not a CRI log record: %.80q", path, k+1, line)
			}
			tag, _, _ := bytes.Cut(fields[2], []byte(":"))
			if string(fields[1]) != "stdout" || string(tag) != "F" {
				return 0, fmt.Errorf("%s: line %d is not a stdout F record: %.80q", path, k+1, line)
			}
			if _, err := time.Parse(time.RFC3339Nano, string(fields[0])); err != nil {
				return 0, fmt.Errorf("%s: line %d: %w", path, k+1, err)
			}
			content = fields[3]
		}
		num = strconv.AppendInt(num[:0], int64(k), 10)
		if len(content) != len(num)+1+linegenPad || !bytes.HasPrefix(content, num) ||
			content[len(num)] != ' ' || !bytes.Equal(content[len(num)+1:], pad) {
			return 0, fmt.Errorf("%s: line %d: want line %d of linegen, got %.80q", path, k+1, k, content)
		}
	}
	if k != lines {
		return 0, fmt.Errorf("%s: %d lines, linegen wrote %d", path, k, lines)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func printLogs(w io.Writer, l *LogReport) {
	fmt.Fprintf(w, "\nlog throughput: linegen writes %d lines (%.1f MB) to stdout as fast as it can, %d alternating runs per tool\n", l.Lines, float64(l.AppBytes)/1e6, l.Runs)
	fmt.Fprintln(w, "(MB/s = app bytes / median time, 1 MB = 10^6 bytes; ratio = tool median / runclet median, same measure; >1: runclet faster)")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TOOL\tMEASURE\tMEDIAN ms\tP90 ms\tMIN ms\tMB/s\tRATIO\tLOG FILE MB\t")
	for _, r := range l.Rows {
		lb := ""
		if r.LogBytes != 0 {
			lb = fmt.Sprintf("%.1f", float64(r.LogBytes)/1e6)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t\n", r.Tool, r.Measure, ms(r.Stats.Median), ms(r.Stats.P90), ms(r.Stats.Min), r.MBps, ratio(r.Ratio), lb)
	}
	tw.Flush()
}
