// Command podbench measures how fast runclet starts pods, how much memory
// its per-pod supervisor keeps, how fast an app's output gets through it to
// the CRI log file and how long an exec takes, next to runc and containerd
// measured in the same run on the same machine.
//
//	sudo go run ./integration/cmd/podbench [-runs 20] [-pods 10] [-runclet bin/runclet] [-runc PATH] [-json]
//	    [-only oneshot,start,memory,logs,exec] [-log-runs 5] [-log-lines 2000000] [-execs 100] [-crictl PATH]
//
// Everything lives in one temporary directory: a private runclet (its own
// --root, --run-root and --config, whose built-in network is the bridge
// rclbench0 on 10.214.0.0/24) and a private containerd (its own config, root,
// state and socket; overlayfs), both holding the same busybox test image
// (testimage.Busybox, imported from a docker archive). containerd's cri
// plugin is off unless the logs or exec section runs; then it is on with its
// own state, CNI config dir (a bridge conflist on rclbench1, 10.214.1.0/24,
// host-local IPAM data under the temporary directory, no masquerading),
// network namespaces under its state dir, the runc below, a sandbox image
// of our own (busybox running "sleep 100000") and cgroups under /<tag>.
// It measures the wall time of the whole command, as a user or kubelet
// waits for it:
//
//   - oneshot: "runclet run --rm IMAGE -- true" (a whole pod: netns,
//     CNI, supervisor, app, removal), also with --net host (no netns, no
//     CNI: what the network costs), against "runc run -b BUNDLE ID" of
//     the bundle runclet generated for the same app (same seccomp profile,
//     capabilities and mounts; it joins a kept-alive pod's pinned
//     namespaces and rootfs, so it is runc's floor: no pod to build), with
//     the runc whose libcontainer runclet links (built with go install)
//     and Debian's /usr/sbin/runc if present, and against "ctr run --rm
//     --seccomp IMAGE ID true" (snapshot, shim, task, removal; no CNI).
//   - start (pod + app start): "runclet app sandbox" + "app add" + "app
//     start" of "sleep 1000" against "ctr run -d" of the same; each is
//     removed afterwards, untimed.
//   - memory: with -pods pods running "sleep 1000" from each tool, the
//     mean VmRSS and PSS (smaps_rollup) of runclet's stage1-runc
//     supervisors and of the containerd-shim-runc-v2 processes of this
//     containerd (one per ctr task, as one per runclet pod).
//   - logs: an app (a static Go program, linegen, on the busybox image)
//     writes -log-lines numbered ~100-byte lines to stdout through a
//     64 KiB buffer as fast as it can. runclet: the pod and app are made
//     untimed ("app sandbox", "app add"), then "app start" until "app
//     status" says exited; the same for containerd through its cri plugin
//     with crictl (runp and create untimed, "crictl start" until "crictl
//     inspect" says exited). Both are polled every 50 ms; each runtime's
//     own record of the app's life (startedAt to finishedAt) is shown too.
//     Also "runclet run --rm" of the same, the whole one-shot pod, its
//     output copied by the CLI from the log to /dev/null. The first
//     (warm-up) run of each checks that the log holds exactly the lines
//     written, in order, each one F record.
//   - exec: in a running "sleep 100000" of each tool, -execs runs of
//     "true": "runclet exec POD -- true" against "ctr task exec" and, on
//     containerd's cri plugin, "crictl exec" (streaming, SPDY) and
//     "crictl exec --sync" (ExecSync, what probes use); each a CLI process
//     per exec. The "--version" of each CLI is timed alongside: the cost
//     of starting the CLI at all.
//
// Runs alternate between the tools (runclet, runclet --net host, runc,
// Debian runc, ctr, runclet, ...) after one untimed warm-up round, so that
// load noise, page cache and CPU frequency changes hit every tool alike
// instead of favouring whichever ran its N runs last. The tables give
// median, p90 (p99 for exec) and minimum and the ratio of each tool's
// median to runclet's (above 1: runclet is faster).
//
// It needs root and containerd (Debian: apt-get install -y containerd);
// the logs and exec sections build crictl with go install (or take
// -crictl). Any failing command stops it with the command's stderr and a
// non-zero exit; pods, tasks, CRI pods, containerd, mounts, cgroups, the
// bridges and the temporary directory are always cleaned up, and it
// checks that no sleep it started survives.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/integration/mountinfo"
	"github.com/runclet/runclet/integration/peer"
	"github.com/runclet/runclet/integration/testimage"
)

const (
	image  = "localhost/runclet/busybox:latest"
	bridge = "rclbench0"
	subnet = "10.214.0.0/24"
	ctrNS  = "bench"

	// containerd's cri plugin: its own bridge, subnet, images, namespace.
	criBridge    = "rclbench1"
	criSubnet    = "10.214.1.0/24"
	criNS        = "k8s.io"
	linegenImage = "localhost/podbench/linegen:latest"
	pauseImage   = "localhost/podbench/pause:latest"
)

// sections are what -only chooses from, in the order they run.
var sections = []string{"oneshot", "start", "memory", "logs", "exec"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "podbench:", err)
		os.Exit(1)
	}
}

// Stats summarizes one command's wall times.
type Stats struct {
	Median  time.Duration   `json:"median_ns"`
	P90     time.Duration   `json:"p90_ns"`
	P99     time.Duration   `json:"p99_ns"`
	Min     time.Duration   `json:"min_ns"`
	Samples []time.Duration `json:"samples_ns"`
}

// Row is one tool doing one operation.
type Row struct {
	Operation string  `json:"operation"`
	Tool      string  `json:"tool"`
	Stats     Stats   `json:"stats"`
	Ratio     float64 `json:"median_over_runclet,omitempty"` // >1: runclet faster
}

// MemRow is the per-pod process of one tool.
type MemRow struct {
	Tool     string  `json:"tool"`
	Process  string  `json:"process"`
	Pods     int     `json:"pods"`
	RSSKiB   float64 `json:"mean_rss_kib"`
	PSSKiB   float64 `json:"mean_pss_kib"`
	RSSRatio float64 `json:"rss_over_runclet,omitempty"`
	PSSRatio float64 `json:"pss_over_runclet,omitempty"`
}

// Report is everything -json prints.
type Report struct {
	Sections []string          `json:"sections"`
	Runs     int               `json:"runs"`
	Versions map[string]string `json:"versions"`
	Latency  []Row             `json:"latency,omitempty"`
	Memory   []MemRow          `json:"memory,omitempty"`
	Logs     *LogReport        `json:"log_throughput,omitempty"`
	Execs    int               `json:"execs,omitempty"`
	Exec     []Row             `json:"exec,omitempty"`
	Notes    []string          `json:"notes"`
}

// bench is one benchmark's private world.
type bench struct {
	dir         string   // everything temporary
	runclet     []string // binary and its global flags
	runc        string   // the runc runclet's libcontainer comes from
	debRunc     string   // /usr/sbin/runc, or ""
	ctr         []string // ctr -a SOCK -n bench
	sock        string
	tag         string           // prefix of ctr and runc IDs
	ctd         *peer.Containerd // nil until started
	ctdLog      *os.File         // its log, open while it runs
	podIDs      map[string]bool  // every runclet pod seen
	cgroupNew   bool             // /bench did not exist: ours to remove
	cri         bool             // containerd's cri plugin is on
	crictl      []string         // crictl and its endpoint flags
	crictlBuilt bool             // crictl is crictlVersion, built here
}

func run(ctx context.Context, args []string) (err error) {
	fs := flag.NewFlagSet("podbench", flag.ContinueOnError)
	runs := fs.Int("runs", 20, "timed runs per tool and operation (oneshot, start)")
	pods := fs.Int("pods", 10, "pods per tool for the memory figures")
	only := fs.String("only", strings.Join(sections, ","), "comma-separated `sections` to run: "+strings.Join(sections, ", "))
	logRuns := fs.Int("log-runs", 5, "timed runs per tool for the log throughput")
	logLines := fs.Int("log-lines", 2_000_000, "lines the log throughput app writes (about 100 bytes each)")
	execs := fs.Int("execs", 100, "timed execs per tool")
	runclet := fs.String("runclet", "bin/runclet", "runclet `binary` (stage1-runc next to it; make build)")
	runcBin := fs.String("runc", "", "runc `binary` to compare with (default: go install the version in go.mod)")
	crictlBin := fs.String("crictl", "", "crictl `binary` (default: go install sigs.k8s.io/cri-tools/cmd/crictl@"+crictlVersion+")")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	sel := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(sections, s) {
			return fmt.Errorf("-only: unknown section %q (have %s)", s, strings.Join(sections, ", "))
		}
		sel[s] = true
	}
	switch {
	case fs.NArg() != 0:
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	case *runs < 1 || *pods < 1 || *logRuns < 1 || *execs < 1:
		return errors.New("-runs, -pods, -log-runs and -execs must be at least 1")
	case *logLines < 1:
		return errors.New("-log-lines must be at least 1")
	case os.Geteuid() != 0:
		return errors.New("must run as root (namespaces, cgroups, mounts, CNI)")
	}
	needCRI := sel["logs"] || sel["exec"]
	for _, t := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "ip"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found in PATH (Debian: apt-get install -y containerd iproute2)", t)
		}
	}
	bin, err := filepath.Abs(*runclet)
	if err != nil {
		return err
	}
	for _, f := range []string{bin, filepath.Join(filepath.Dir(bin), "stage1-runc")} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w (run make build)", err)
		}
	}
	for _, br := range []string{bridge, criBridge} {
		if _, err := os.Stat("/sys/class/net/" + br); err == nil && (br == bridge || needCRI) {
			return fmt.Errorf("bridge %s exists: another podbench runs, or delete it (ip link del %s)", br, br)
		}
	}

	dir, err := os.MkdirTemp("", "podbench-")
	if err != nil {
		return err
	}
	b := &bench{dir: dir, tag: "pb" + filepath.Base(dir)[len("podbench-"):], podIDs: map[string]bool{}, cri: needCRI}
	defer func() {
		if cerr := b.cleanup(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
	}()
	if err := b.setup(ctx, bin, *runcBin, *crictlBin, sel["logs"]); err != nil {
		return err
	}

	rep := Report{Runs: *runs, Versions: map[string]string{}}
	for _, s := range sections {
		if sel[s] {
			rep.Sections = append(rep.Sections, s)
		}
	}
	if err := b.versions(ctx, rep.Versions); err != nil {
		return err
	}
	if sel["oneshot"] {
		rows, err := b.oneShot(ctx, *runs)
		if err != nil {
			return fmt.Errorf("one-shot run: %w", err)
		}
		rep.Latency = append(rep.Latency, rows...)
		rep.Notes = append(rep.Notes,
			"one-shot \"runclet --net host\": the same pod without its netns and CNI attach/detach (ctr's containers get no CNI either); its ratio shows what the network costs",
			"one-shot runc rows run runclet's own bundle for the app inside a kept-alive pod (joins its pinned net/ipc/uts namespaces, its rootfs; own cgroup per run): libcontainer's floor, no pod built")
	}
	if sel["start"] {
		rows, err := b.podStart(ctx, *runs)
		if err != nil {
			return fmt.Errorf("pod + app start: %w", err)
		}
		rep.Latency = append(rep.Latency, rows...)
	}
	if sel["oneshot"] || sel["start"] {
		rep.Notes = append(rep.Notes,
			"ctr uses the runc runclet's libcontainer comes from (--runc-binary) and --seccomp (containerd's default profile); its containers get an empty netns (no CNI), runclet pods a CNI bridge attachment",
			"ctr runs use --null-io (no fifos); runclet apps write a CRI log through the supervisor")
	}
	if sel["memory"] {
		if rep.Memory, err = b.memory(ctx, *pods); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("memory: %d pods per tool, each 1 process per pod: runclet's stage1-runc supervisor, and one containerd-shim-runc-v2 per ctr task (ctr tasks are not grouped into sandboxes); the containerd daemon itself is not counted", *pods))
	}
	if sel["logs"] {
		if rep.Logs, err = b.logThroughput(ctx, *logRuns, *logLines); err != nil {
			return fmt.Errorf("log throughput: %w", err)
		}
		rep.Notes = append(rep.Notes, logNotes...)
	}
	if sel["exec"] {
		rep.Execs = *execs
		if rep.Exec, err = b.execLatency(ctx, *execs); err != nil {
			return fmt.Errorf("exec: %w", err)
		}
		rep.Notes = append(rep.Notes, execNotes...)
	}

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printReport(os.Stdout, rep)
	return nil
}

// setup writes the configs, builds runc (and crictl), starts containerd
// and imports the test images into both stores.
func (b *bench) setup(ctx context.Context, runclet, runcBin, crictlBin string, logs bool) error {
	for _, d := range []string{"root", "run", "cni", "bundle", "runc", "runc-debian", "ctd"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o700); err != nil {
			return err
		}
	}
	cfg := filepath.Join(b.dir, "runclet.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = %q\n",
		filepath.Join(b.dir, "cni"), bridge, subnet), 0o600); err != nil {
		return err
	}
	b.runclet = []string{runclet, "--root", filepath.Join(b.dir, "root"), "--run-root", filepath.Join(b.dir, "run"), "--config", cfg}

	b.runc = runcBin
	if b.runc == "" {
		v, err := output(ctx, nil, "go", "list", "-m", "-f", "{{.Version}}", "github.com/opencontainers/runc")
		if err != nil {
			return err
		}
		gobin := filepath.Join(b.dir, "gobin")
		fmt.Fprintf(os.Stderr, "building runc %s\n", strings.TrimSpace(v))
		env := append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-tags=seccomp")
		if _, err := output(ctx, env, "go", "install", "github.com/opencontainers/runc@"+strings.TrimSpace(v)); err != nil {
			return err
		}
		b.runc = filepath.Join(gobin, "runc")
	}
	if _, err := os.Stat("/usr/sbin/runc"); err == nil {
		b.debRunc = "/usr/sbin/runc"
	}

	archive := filepath.Join(b.dir, "busybox.tar")
	img, err := testimage.Busybox()
	if err != nil {
		return err
	}
	images := map[string]v1.Image{image: img}
	if logs {
		if images[linegenImage], err = linegen(img); err != nil {
			return err
		}
	}
	if b.cri {
		if images[pauseImage], err = mutate.Config(img, v1.Config{Cmd: []string{"sleep", "100000"}, Env: []string{testimage.DefaultPath}}); err != nil {
			return err
		}
	}
	if err := testimage.WriteDockerArchive(archive, images); err != nil {
		return err
	}
	if _, err := b.do(ctx, b.runcletArgs("image", "import", archive)...); err != nil {
		return err
	}

	b.cgroupNew = len(ctrCgroups()) == 0
	ctd := filepath.Join(b.dir, "ctd")
	// With the cri plugin: everything under our directory, the runc the
	// ctr rows use, no AppArmor (absent here), no iptables rules on the
	// host and no oom_score_adj below ours (root lacks CAP_SYS_RESOURCE in
	// some sandboxes). Its Stop removes the host directories its shims and
	// libcni made.
	c := &peer.Containerd{Dir: ctd, NoCRI: !b.cri, Bridge: criBridge, Subnet: criSubnet, NetName: "podbench-cri",
		NoNAT: true, SandboxImage: pauseImage, RuncBinary: b.runc, DisableAppArmor: true}
	b.sock = c.Socket()
	b.ctr = []string{"ctr", "-a", b.sock, "-n", ctrNS}
	if b.cri {
		if err := b.setupCRIClient(ctx, crictlBin); err != nil {
			return err
		}
	}
	logf, err := os.Create(filepath.Join(ctd, "containerd.log"))
	if err != nil {
		return err
	}
	c.Log = logf
	if err := c.Start(); err != nil {
		logf.Close()
		return err
	}
	b.ctd, b.ctdLog = c, logf
	if _, err = b.do(ctx, b.ctrArgs("images", "import", archive)...); err != nil {
		return err
	}
	if b.cri {
		return b.importCRI(ctx, archive, slices.Collect(maps.Keys(images)))
	}
	return nil
}

func (b *bench) runcletArgs(a ...string) []string { return append(slices.Clone(b.runclet), a...) }
func (b *bench) ctrArgs(a ...string) []string     { return append(slices.Clone(b.ctr), a...) }

// ctrRun is "ctr run" as every operation uses it: the same runc as the
// runc rows with its state under our directory, containerd's default
// seccomp profile, no stdio fifos.
func (b *bench) ctrRun(mode, id string, args ...string) []string {
	return b.ctrArgs(append([]string{"run", mode, "--null-io", "--seccomp", "--runc-binary", b.runc,
		"--runc-root", filepath.Join(b.dir, "ctd", "runc-ctr"), image, id}, args...)...)
}

func (b *bench) versions(ctx context.Context, v map[string]string) error {
	cmds := map[string][]string{
		"runclet": {b.runclet[0], "--version"}, "runc": {b.runc, "--version"},
		"containerd": {"containerd", "--version"}, "ctr": {"ctr", "--version"}, "kernel": {"uname", "-r"},
	}
	if b.debRunc != "" {
		cmds["runc (debian)"] = []string{b.debRunc, "--version"}
	}
	if b.cri {
		cmds["crictl"] = []string{b.crictl[0], "--version"}
	}
	for name, argv := range cmds {
		out, err := b.do(ctx, argv...)
		if err != nil {
			return err
		}
		v[name], _, _ = strings.Cut(strings.TrimSpace(out), "\n")
	}
	if b.crictlBuilt {
		v["crictl"] += " (go install sigs.k8s.io/cri-tools/cmd/crictl@" + crictlVersion + ")"
	}
	return nil
}

// tool is one contender for an operation: what to prepare for run i,
// untimed, what to run, timed, and what to do afterwards, untimed.
type tool struct {
	name   string
	before func(ctx context.Context, i int) error
	timed  func(ctx context.Context, i int) ([]time.Duration, error) // total first, then phases
	after  func(ctx context.Context, i int) error
	parts  []string // names of the phases after the total
}

// alternate runs a warm-up round (i = -1) and then runs rounds, each tool
// once per round in order, and returns a row per tool and phase.
func alternate(ctx context.Context, op string, runs int, tools []tool) ([]Row, error) {
	samples := make([][][]time.Duration, len(tools))
	for i := -1; i < runs; i++ {
		if runs <= 20 || (i+1)%10 == 0 {
			fmt.Fprintf(os.Stderr, "%s: run %d/%d\n", op, i+1, runs)
		}
		for t, tl := range tools {
			if tl.before != nil {
				if err := tl.before(ctx, i); err != nil {
					return nil, fmt.Errorf("%s: %w", tl.name, err)
				}
			}
			d, err := tl.timed(ctx, i)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", tl.name, err)
			}
			if tl.after != nil {
				if err := tl.after(ctx, i); err != nil {
					return nil, fmt.Errorf("%s: %w", tl.name, err)
				}
			}
			if i < 0 {
				samples[t] = make([][]time.Duration, len(d))
				continue
			}
			for k := range d {
				samples[t][k] = append(samples[t][k], d[k])
			}
		}
	}
	var rows []Row
	base := summarize(samples[0][0]).Median
	for t, tl := range tools {
		st := summarize(samples[t][0])
		r := Row{Operation: op, Tool: tl.name, Stats: st}
		if t > 0 {
			r.Ratio = float64(st.Median) / float64(base)
		}
		rows = append(rows, r)
		for k, part := range tl.parts {
			rows = append(rows, Row{Operation: op, Tool: "  - " + part, Stats: summarize(samples[t][k+1])})
		}
	}
	return rows, nil
}

func (b *bench) oneShot(ctx context.Context, runs int) ([]Row, error) {
	// The bundle runclet generates for "true", in a pod kept alive for the
	// runc runs: it references the pod's pinned namespaces and rootfs.
	podID, err := b.do(ctx, b.runcletArgs("app", "sandbox")...)
	if err != nil {
		return nil, err
	}
	podID = b.pod(podID)
	appID, err := b.do(ctx, b.runcletArgs("app", "add", podID, image, "--", "true")...)
	if err != nil {
		return nil, err
	}
	src := filepath.Join(b.dir, "root", "pods", podID, "apps", strings.TrimSpace(appID), "bundle")
	raw, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, err
	}
	linux, _ := spec["linux"].(map[string]any)
	root, _ := spec["root"].(map[string]any)
	cgroup, _ := linux["cgroupsPath"].(string)
	if rootPath, _ := root["path"].(string); cgroup == "" || !filepath.IsAbs(rootPath) {
		return nil, fmt.Errorf("%s/config.json: want an absolute root.path and a cgroupsPath", src)
	}
	bundle := filepath.Join(b.dir, "bundle")
	runcTool := func(name, bin, stateDir string) tool {
		return tool{name: name, timed: func(ctx context.Context, i int) ([]time.Duration, error) {
			id := fmt.Sprintf("%s-%s-%d", b.tag, filepath.Base(stateDir), i+1)
			// A cgroup of its own per run, next to the app's in the pod's.
			linux["cgroupsPath"] = filepath.Join(filepath.Dir(cgroup), id)
			raw, err := json.Marshal(spec)
			if err == nil {
				err = os.WriteFile(filepath.Join(bundle, "config.json"), raw, 0o600)
			}
			if err != nil {
				return nil, err
			}
			return b.time(ctx, bin, "--root", filepath.Join(b.dir, stateDir), "run", "-b", bundle, id)
		}}
	}
	tools := []tool{
		{name: "runclet", timed: func(ctx context.Context, _ int) ([]time.Duration, error) {
			return b.time(ctx, b.runcletArgs("run", "--rm", image, "--", "true")...)
		}},
		{name: "runclet --net host", timed: func(ctx context.Context, _ int) ([]time.Duration, error) {
			return b.time(ctx, b.runcletArgs("run", "--rm", "--net", "host", image, "--", "true")...)
		}},
		runcTool("runc "+b.runcVersion(ctx, b.runc), b.runc, "runc"),
	}
	if b.debRunc != "" {
		tools = append(tools, runcTool("runc "+b.runcVersion(ctx, b.debRunc)+" (debian)", b.debRunc, "runc-debian"))
	}
	tools = append(tools, tool{name: "ctr", timed: func(ctx context.Context, i int) ([]time.Duration, error) {
		return b.time(ctx, b.ctrRun("--rm", fmt.Sprintf("%s-oneshot-%d", b.tag, i+1), "true")...)
	}})
	rows, err := alternate(ctx, "one-shot run", runs, tools)
	if err != nil {
		return nil, err
	}
	_, err = b.do(ctx, b.runcletArgs("rm", podID)...)
	return rows, err
}

func (b *bench) podStart(ctx context.Context, runs int) ([]Row, error) {
	var podID string
	runclet := tool{name: "runclet", parts: []string{"app sandbox", "app add", "app start"},
		timed: func(ctx context.Context, _ int) ([]time.Duration, error) {
			start := time.Now()
			out, err := b.do(ctx, b.runcletArgs("app", "sandbox")...)
			if err != nil {
				return nil, err
			}
			podID = b.pod(out)
			t1 := time.Now()
			app, err := b.do(ctx, b.runcletArgs("app", "add", podID, image, "--", "sleep", "1000")...)
			if err != nil {
				return nil, err
			}
			t2 := time.Now()
			if _, err := b.do(ctx, b.runcletArgs("app", "start", podID, strings.TrimSpace(app))...); err != nil {
				return nil, err
			}
			t3 := time.Now()
			return []time.Duration{t3.Sub(start), t1.Sub(start), t2.Sub(t1), t3.Sub(t2)}, nil
		},
		after: func(ctx context.Context, _ int) error {
			_, err := b.do(ctx, b.runcletArgs("rm", podID)...)
			return err
		},
	}
	id := func(i int) string { return fmt.Sprintf("%s-pod-%d", b.tag, i+1) }
	ctr := tool{name: "ctr run -d",
		timed: func(ctx context.Context, i int) ([]time.Duration, error) {
			return b.time(ctx, b.ctrRun("-d", id(i), "sleep", "1000")...)
		},
		after: func(ctx context.Context, i int) error { return b.ctrRemove(ctx, id(i)) },
	}
	return alternate(ctx, "pod + app start", runs, []tool{runclet, ctr})
}

func (b *bench) memory(ctx context.Context, pods int) ([]MemRow, error) {
	fmt.Fprintf(os.Stderr, "memory: starting %d pods per tool\n", pods)
	var sups []int
	for i := range pods {
		out, err := b.do(ctx, b.runcletArgs("run", "-d", image, "--", "sleep", "1000")...)
		if err != nil {
			return nil, err
		}
		id := b.pod(out)
		pid, err := os.ReadFile(filepath.Join(b.dir, "run", "pods", id, "supervisor.pid"))
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(pid)))
		if err != nil {
			return nil, fmt.Errorf("supervisor.pid of pod %s: %w", id, err)
		}
		sups = append(sups, n)
		if _, err := b.do(ctx, b.ctrRun("-d", fmt.Sprintf("%s-mem-%d", b.tag, i+1), "sleep", "1000")...); err != nil {
			return nil, err
		}
	}
	time.Sleep(2 * time.Second) // let both settle after their start bursts
	shims, err := b.shims()
	if err != nil {
		return nil, err
	}
	if len(shims) != pods {
		return nil, fmt.Errorf("found %d containerd-shim-runc-v2 processes of %s, want %d", len(shims), b.sock, pods)
	}
	sup, err := meanMem(sups)
	if err != nil {
		return nil, err
	}
	shim, err := meanMem(shims)
	if err != nil {
		return nil, err
	}
	sup.Tool, sup.Process, sup.Pods = "runclet", "stage1-runc supervise", pods
	shim.Tool, shim.Process, shim.Pods = "ctr (containerd)", "containerd-shim-runc-v2", pods
	shim.RSSRatio, shim.PSSRatio = shim.RSSKiB/sup.RSSKiB, shim.PSSKiB/sup.PSSKiB
	return []MemRow{sup, shim}, nil
}

// meanMem averages VmRSS and Pss over pids.
func meanMem(pids []int) (MemRow, error) {
	var r MemRow
	for _, pid := range pids {
		rss, err := procKiB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		if err != nil {
			return r, err
		}
		pss, err := procKiB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
		if err != nil {
			return r, err
		}
		r.RSSKiB += float64(rss) / float64(len(pids))
		r.PSSKiB += float64(pss) / float64(len(pids))
	}
	return r, nil
}

// procKiB reads "KEY   N kB" from a /proc file.
func procKiB(path, key string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

// shims lists the containerd-shim-runc-v2 processes serving our
// containerd: their -address is our socket (they are reparented to init,
// not children of containerd).
func (b *bench) shims() ([]int, error) {
	return findProcs(func(args []string) bool {
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			return false
		}
		i := slices.Index(args, "-address")
		return i >= 0 && i+1 < len(args) && args[i+1] == b.sock
	})
}

func findProcs(match func(args []string) bool) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// pod records a runclet pod ID from a command's output.
func (b *bench) pod(out string) string {
	id := strings.TrimSpace(out)
	if id != "" {
		b.podIDs[id] = true
	}
	return id
}

func (b *bench) ctrRemove(ctx context.Context, id string) error {
	if _, err := b.do(ctx, b.ctrArgs("task", "rm", "-f", id)...); err != nil {
		return err
	}
	_, err := b.do(ctx, b.ctrArgs("container", "rm", id)...)
	return err
}

func (b *bench) runcVersion(ctx context.Context, bin string) string {
	out, _ := b.do(ctx, bin, "--version")
	f := strings.Fields(out) // "runc version 1.5.3 ..."
	if len(f) >= 3 {
		return f[2]
	}
	return "?"
}

// time runs one command and returns its wall time.
func (b *bench) time(ctx context.Context, argv ...string) ([]time.Duration, error) {
	start := time.Now()
	_, err := b.do(ctx, argv...)
	return []time.Duration{time.Since(start)}, err
}

func (b *bench) do(ctx context.Context, argv ...string) (string, error) {
	return output(ctx, nil, argv...)
}

// output runs a command and returns its stdout; a failure carries its stderr.
func output(ctx context.Context, env []string, argv ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env, c.Stdout, c.Stderr = env, &stdout, &stderr
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, tail(stderr.Bytes()))
	}
	return stdout.String(), nil
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}

// cleanup undoes everything, whatever state a failure left, and says what
// it could not undo.
func (b *bench) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if b.runclet != nil { // every pod in our private root is ours
		out, err := b.do(ctx, b.runcletArgs("list", "-o", "json")...)
		keep(err)
		var pods []struct{ ID string }
		if err == nil {
			keep(json.Unmarshal([]byte(out), &pods))
		}
		for _, p := range pods {
			b.pod(p.ID)
			_, err := b.do(ctx, b.runcletArgs("rm", p.ID)...)
			keep(err)
		}
		_, err = b.do(ctx, b.runcletArgs("gc")...)
		keep(err)
	}
	for bin, state := range map[string]string{b.runc: "runc", b.debRunc: "runc-debian"} {
		if bin == "" {
			continue
		}
		if out, err := b.do(ctx, bin, "--root", filepath.Join(b.dir, state), "list", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				_, err := b.do(ctx, bin, "--root", filepath.Join(b.dir, state), "delete", "-f", id)
				keep(err)
			}
		}
	}
	if b.ctd != nil {
		if b.crictl != nil { // every CRI pod of our private containerd is ours
			keep(b.criRemoveAll(ctx))
		}
		out, err := b.do(ctx, b.ctrArgs("container", "ls", "-q")...)
		keep(err)
		for _, id := range strings.Fields(out) {
			keep(b.ctrRemove(ctx, id))
		}
		// Stops it and kills (and reports) shims of ours that survived.
		keep(b.ctd.Stop())
		b.ctdLog.Close()
		if b.cgroupNew {
			for _, d := range ctrCgroups() {
				os.Remove(d) // only when empty: a cgroup still in use stays
			}
		}
		if b.cri {
			keep(b.removeCRICgroups())
		}
	}
	keep(unmountUnder(b.dir))
	for _, br := range []string{bridge, criBridge} {
		if br == criBridge && !b.cri {
			continue // not ours
		}
		if _, err := os.Stat("/sys/class/net/" + br); err == nil {
			_, err := b.do(ctx, "ip", "link", "del", br)
			keep(err)
		}
	}
	keep(b.checkSleeps())
	if len(errs) == 0 {
		keep(os.RemoveAll(b.dir))
	} else {
		errs = append(errs, fmt.Errorf("kept %s for inspection", b.dir))
	}
	return errors.Join(errs...)
}

// ctrCgroups lists the cgroup directories of containerd's namespace in
// every hierarchy (v1 controllers, or the v2 root).
func ctrCgroups() []string {
	v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + ctrNS)
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + ctrNS)
	return append(v1, v2...)
}

// checkSleeps fails if a "sleep 1000", "sleep 100000" or linegen of ours
// still runs: one whose cgroup names one of our runclet pods, our ctr IDs
// or our CRI cgroup parent.
func (b *bench) checkSleeps() error {
	pids, err := findProcs(func(args []string) bool {
		return slices.Equal(args, []string{"sleep", "1000"}) || slices.Equal(args, []string{"sleep", "100000"}) ||
			len(args) == 2 && args[0] == "/usr/local/bin/linegen"
	})
	if err != nil {
		return err
	}
	var left []string
	for _, pid := range pids {
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			continue // gone
		}
		ours := strings.Contains(string(cg), "/"+ctrNS+"/"+b.tag+"-") || strings.Contains(string(cg), ":/"+b.tag+"/")
		for id := range b.podIDs {
			ours = ours || strings.Contains(string(cg), id)
		}
		if ours {
			left = append(left, strconv.Itoa(pid))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("sleep or linegen started by podbench still running: pids %s", strings.Join(left, ", "))
	}
	return nil
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			mp := mountinfo.Unescape(fields[4])
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				mps = append(mps, mp)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	slices.SortFunc(mps, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

func summarize(d []time.Duration) Stats {
	s := slices.Clone(d)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	rank := func(p float64) time.Duration { return s[int(math.Ceil(p*float64(n)))-1] } // nearest rank
	return Stats{Median: med, P90: rank(0.9), P99: rank(0.99), Min: s[0], Samples: d}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

// ratio formats a ratio, "" for none.
func ratio(r float64) string {
	if r == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", r)
}

func printReport(w io.Writer, rep Report) {
	names := make([]string, 0, len(rep.Versions))
	for n := range rep.Versions {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "%-14s %s\n", n+":", rep.Versions[n])
	}
	if len(rep.Latency) > 0 {
		fmt.Fprintf(w, "\nlatency, %d alternating runs per tool (ratio = tool median / runclet median; >1: runclet faster)\n", rep.Runs)
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "OPERATION\tTOOL\tMEDIAN ms\tP90 ms\tMIN ms\tRATIO\t")
		for _, r := range rep.Latency {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Operation, r.Tool, ms(r.Stats.Median), ms(r.Stats.P90), ms(r.Stats.Min), ratio(r.Ratio))
		}
		tw.Flush()
	}
	if len(rep.Memory) > 0 {
		fmt.Fprintln(w, "\nmemory per pod (ratio = shim / supervisor)")
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "TOOL\tPROCESS (1 per pod)\tPODS\tMEAN RSS KiB\tMEAN PSS KiB\tRSS RATIO\tPSS RATIO\t")
		for _, m := range rep.Memory {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.0f\t%s\t%s\t\n", m.Tool, m.Process, m.Pods, m.RSSKiB, m.PSSKiB, ratio(m.RSSRatio), ratio(m.PSSRatio))
		}
		tw.Flush()
	}
	if rep.Logs != nil {
		printLogs(w, rep.Logs)
	}
	if len(rep.Exec) > 0 {
		fmt.Fprintf(w, "\nexec latency, %d alternating execs of \"true\" per tool, a CLI process each (ratio = tool median / runclet median; >1: runclet faster)\n", rep.Execs)
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "OPERATION\tTOOL\tP50 ms\tP99 ms\tMIN ms\tRATIO\t")
		for _, r := range rep.Exec {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Operation, r.Tool, ms(r.Stats.Median), ms(r.Stats.P99), ms(r.Stats.Min), ratio(r.Ratio))
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}
