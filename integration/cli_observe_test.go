package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/runclet/runclet/integration/testimage"
)

// TestCLIPsPortStats: ps lists an app's processes from its cgroup, -p
// PORT picks a free host port that port shows and that serves, and stats
// reports the pod's CPU, memory and pids.
func TestCLIPsPortStats(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "-d", "--name", "obs", "-p", "8080", img, "--", "sh", "-c",
		"while true; do echo served | nc -l -p 8080; done & while true; do :; done"))

	// ps: the shell (pid 1 inside), its busy loop and nc, with host pids.
	var procs []struct {
		App     string `json:"app"`
		Pid     int    `json:"pid"`
		Command string `json:"command"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs = nil
		json.Unmarshal([]byte(pi.run("ps", "obs", "-o", "json")), &procs)
		var nc bool
		for _, p := range procs {
			nc = nc || strings.HasPrefix(p.Command, "nc -l")
		}
		if nc || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(procs) < 2 || procs[0].App != "busybox" {
		t.Fatalf("ps: %+v", procs)
	}
	for _, p := range procs {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid)); err != nil {
			t.Errorf("ps pid %d is no host process: %v", p.Pid, err)
		}
	}
	if table := pi.run("top", "obs", "busybox"); !strings.Contains(table, "nc -l -p 8080") || !strings.Contains(table, "PID") {
		t.Errorf("top table: %q", table)
	}

	// port: the picked host port, which reaches the app.
	out := pi.run("port", "obs")
	var hostPort int
	if _, err := fmt.Sscanf(out, "8080/tcp -> 0.0.0.0:%d", &hostPort); err != nil || hostPort == 0 {
		t.Fatalf("port: %q: %v", out, err)
	}
	if one := pi.run("port", "obs", "8080"); one != "0.0.0.0:"+strconv.Itoa(hostPort)+"\n" {
		t.Errorf("port obs 8080: %q", one)
	}
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && got != "served\n"; time.Sleep(200 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", hostIPForTest(t)+":"+strconv.Itoa(hostPort), time.Second); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 64)
			n, _ := c.Read(b)
			got = string(b[:n])
			c.Close()
		}
	}
	if got != "served\n" {
		t.Errorf("host port %d served %q", hostPort, got)
	}
	if _, stderr, err := pi.try("port", "obs", "9999"); exitCodeOf(t, err) != 125 || !strings.Contains(stderr, "publishes no port 9999") {
		t.Errorf("port of an unpublished port: %v %q", err, stderr)
	}

	// stats: the busy loop shows as CPU use; memory and pids are there.
	var rows []struct {
		Pod        string  `json:"pod"`
		Name       string  `json:"name"`
		CPUPercent float64 `json:"cpuPercent"`
		Memory     uint64  `json:"memoryWorkingSet"`
		Pids       uint64  `json:"pids"`
	}
	out = pi.run("stats", "--no-stream", "-o", "json", "--interval", "500ms")
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("stats: %v: %s", err, out)
	}
	if r := rows[0]; r.Pod != podID || r.Name != "obs" || r.CPUPercent < 5 || r.Memory == 0 || r.Pids < 2 {
		t.Errorf("stats: %+v", r)
	}
	if table := pi.run("stats", "--no-stream", "obs"); !strings.Contains(table, "CPU %") || !strings.Contains(table, "obs") {
		t.Errorf("stats table: %q", table)
	}
	// Streaming JSON lines until interrupted.
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "stats", "-o", "json", "--interval", "200ms")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(stdout)
	for i := 0; i < 3; i++ {
		var line map[string]any
		if err := dec.Decode(&line); err != nil || line["pod"] != podID {
			t.Fatalf("stats line %d: %v %v", i, err, line)
		}
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("stats after ctrl-c: %v", err)
	}
}

// hostIPForTest is an address of this host that port mappings answer on.
func hostIPForTest(t *testing.T) string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address for the port mapping")
	return ""
}

// TestCLIRunEnvLabelPull: --env-file, -e KEY passing runclet's value,
// --label on the pod and app, --pull=never and --pull=always.
func TestCLIRunEnvLabelPull(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	envFile := filepath.Join(t.TempDir(), "env")
	os.WriteFile(envFile, []byte("# a comment\nFROM_FILE=file value\n\nPASSED\nOVERRIDDEN=file\n"), 0o644)
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "run", "--rm",
		"--env-file", envFile, "-e", "OVERRIDDEN=flag", "-e", "FROM_HOST", "-e", "UNSET_ON_HOST", img, "--", "sh", "-c",
		`echo "[$FROM_FILE][$PASSED][$OVERRIDDEN][$FROM_HOST][${UNSET_ON_HOST-unset}]"`)
	cmd.Env = append(os.Environ(), "PASSED=from file key", "FROM_HOST=host value")
	out, err := cmd.Output()
	if err != nil || string(out) != "[file value][from file key][flag][host value][unset]\n" {
		t.Errorf("env: %v %q", err, out)
	}

	id := lastLine(pi.run("run", "-d", "--label", "tier=web", "-l", "team=a", img, "--", "true"))
	var p struct {
		Labels map[string]string `json:"labels"`
		Apps   []struct {
			Labels map[string]string `json:"labels"`
		} `json:"apps"`
	}
	json.Unmarshal([]byte(pi.run("inspect", id)), &p)
	if p.Labels["tier"] != "web" || p.Labels["team"] != "a" || len(p.Apps) != 1 || p.Apps[0].Labels["tier"] != "web" {
		t.Errorf("labels: %+v", p)
	}

	missing := pi.reg.Host() + "/test/not-pulled:latest"
	_, stderr, err := pi.try("run", "--rm", "--pull=never", missing, "--", "true")
	if exitCodeOf(t, err) != 125 || !strings.Contains(stderr, "--pull=never") {
		t.Errorf("--pull=never of a missing image: %v %q", err, stderr)
	}
	// --pull=always goes to the registry even though the image is here:
	// the image the tag names there now is what runs.
	base, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := base.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Env = append(cf.Config.Env, "MARK=moved")
	moved, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pi.reg.Push("test/busybox:latest", moved); err != nil {
		t.Fatal(err)
	}
	if out := pi.run("run", "--rm", "--pull=missing", img, "--", "sh", "-c", "echo [$MARK]"); out != "[]\n" {
		t.Errorf("--pull=missing: %q, want the stored image", out)
	}
	if out := pi.run("run", "--rm", "--pull=always", img, "--", "sh", "-c", "echo [$MARK]"); out != "[moved]\n" {
		t.Errorf("--pull=always: %q, want the registry's image", out)
	}
}

// TestCLIStatsOnATerminal: on a terminal stats redraws its table in
// place with CPU and memory sparklines, and ctrl-c ends it cleanly.
func TestCLIStatsOnATerminal(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	pi.run("run", "-d", "--name", "busy", img, "--", "sh", "-c", "while true; do :; done")
	term := newTerminal(t)
	before := term.termios()
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "stats", "--interval", "200ms")
	term.start(cmd)
	term.waitFor("\x1b[H\x1b[2J")
	term.waitFor("busy")
	// Three redraws: each sparkline has three samples.
	for deadline := time.Now().Add(10 * time.Second); strings.Count(term.out.String(), "\x1b[2J") < 4 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	screen := term.out.String()
	screen = screen[strings.LastIndex(screen, "\x1b[2J"):]
	if !strings.Contains(screen, "CPU %") || !strings.ContainsAny(screen, "▁▂▃▄▅▆▇█") {
		t.Fatalf("no sparklines on the terminal: %q", screen)
	}
	term.master.Write([]byte{3}) // ctrl-c
	if err := cmd.Wait(); err != nil {
		t.Errorf("stats after ctrl-c: %v", err)
	}
	if after := term.termios(); after != before {
		t.Errorf("terminal settings changed")
	}
}
