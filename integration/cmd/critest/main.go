// Command critest runs cri-tools' critest (v1.37.0) against a private
// `runclet daemon`: it builds and caches the critest binary, builds the test
// images critest pulls and serves them from an in-process registry that
// registry.k8s.io, gcr.io, k8s.gcr.io and docker.io are mirrored to, runs
// critest, prints a summary and cleans up (daemon, pods, mounts, bridge).
//
//	go run ./integration/cmd/critest -runclet bin/runclet [-focus RE] [-skip RE]
//
// It needs root. The network is bridge rclcrit0 on 10.216.0.0/24.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/runclet/runclet/integration/testregistry"
)

const (
	criToolsVersion = "v1.37.0"
	bridge          = "rclcrit0"
	subnet          = "10.216.0.0/24"
)

func main() {
	runclet := flag.String("runclet", "bin/runclet", "runclet binary")
	critestBin := flag.String("critest", "", "critest binary (default: build and cache cri-tools "+criToolsVersion+"'s)")
	focus := flag.String("focus", "", "ginkgo focus regexp")
	skip := flag.String("skip", "", "ginkgo skip regexp")
	timeout := flag.Duration("timeout", 90*time.Minute, "ginkgo timeout of the whole run")
	keep := flag.Bool("keep", false, "keep the temporary directory (logs, report)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("critest: ")
	if err := run(*runclet, *critestBin, *focus, *skip, *timeout, *keep); err != nil {
		log.Fatal(err)
	}
}

func run(runclet, critestBin, focus, skip string, timeout time.Duration, keep bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root")
	}
	runclet, err := filepath.Abs(runclet)
	if err != nil {
		return err
	}
	if critestBin == "" {
		if critestBin, err = buildCritest(); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "runclet-critest-")
	if err != nil {
		return err
	}
	// Searchable, so that apps in a user namespace can reach their bundles.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	root, runRoot := filepath.Join(dir, "root"), filepath.Join(dir, "run")
	sock := filepath.Join(dir, "cri.sock")
	cfgPath := filepath.Join(dir, "runclet.toml")

	reg, err := testregistry.Start()
	if err != nil {
		return err
	}
	defer reg.Close()
	t0 := time.Now()
	missing, err := pushImages(reg)
	if err != nil {
		return err
	}
	log.Printf("images built and pushed to %s in %v", reg.Host(), time.Since(t0).Round(time.Millisecond))

	cfg := fmt.Sprintf("[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = %q\n",
		filepath.Join(dir, "no-cni-configs"), bridge, subnet)
	for _, host := range []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io", "docker.io"} {
		cfg += fmt.Sprintf("[registries.%q]\nmirrors = [%q]\n", host, reg.URL())
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	rc := func(args ...string) *exec.Cmd {
		return exec.Command(runclet, append([]string{"--config", cfgPath, "--root", root, "--run-root", runRoot}, args...)...)
	}

	daemonLog, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return err
	}
	defer daemonLog.Close()
	daemon := rc("daemon", "--listen", "unix://"+sock)
	daemon.Stdout, daemon.Stderr = daemonLog, daemonLog
	if err := daemon.Start(); err != nil {
		return err
	}
	defer cleanup(rc, daemon, dir, root, runRoot, keep)
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			return fmt.Errorf("daemon did not create %s in 10s; see %s", sock, daemonLog.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report := filepath.Join(dir, "report.json")
	args := []string{
		"--runtime-endpoint", "unix://" + sock, "--image-endpoint", "unix://" + sock,
		"--ginkgo.v", "--ginkgo.timeout", timeout.String(), "--ginkgo.json-report", report,
	}
	if focus != "" {
		args = append(args, "--ginkgo.focus", focus)
	}
	if skip != "" {
		args = append(args, "--ginkgo.skip", skip)
	}
	critestLog, err := os.Create(filepath.Join(dir, "critest.log"))
	if err != nil {
		return err
	}
	defer critestLog.Close()
	cmd := exec.CommandContext(ctx, critestBin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = critestLog, critestLog
	fmt.Printf("%s %s\n", critestBin, strings.Join(args, " "))
	t0 = time.Now()
	runErr := cmd.Run()
	fmt.Printf("critest finished in %v (%v); output in %s\n", time.Since(t0).Round(time.Second), runErr, critestLog.Name())
	for _, m := range missing {
		fmt.Printf("image not provided: %s\n", m)
	}
	return summarize(report)
}

// buildCritest builds cri-tools' critest test binary once and caches it
// under os.UserCacheDir()/runclet-critest.
func buildCritest() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "runclet-critest", "critest-"+criToolsVersion)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp, err := os.MkdirTemp("", "critest-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// Outside any module, so the repository's go.mod is not involved.
	dl := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/cri-tools@"+criToolsVersion)
	dl.Dir, dl.Stderr = tmp, os.Stderr
	dl.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	js, err := dl.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download cri-tools: %w", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(js, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download cri-tools: no Dir in %s", js)
	}
	src := filepath.Join(tmp, "cri-tools")
	if err := exec.Command("cp", "-r", mod.Dir, src).Run(); err != nil {
		return "", fmt.Errorf("copying %s: %w", mod.Dir, err)
	}
	if err := exec.Command("chmod", "-R", "u+w", src).Run(); err != nil {
		return "", err
	}
	log.Printf("building critest %s (once; cached as %s)", criToolsVersion, out)
	b := exec.Command("go", "test", "-c", "-o", out, "./cmd/critest")
	b.Dir, b.Stdout, b.Stderr = src, os.Stderr, os.Stderr
	b.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if err := b.Run(); err != nil {
		return "", fmt.Errorf("building critest: %w", err)
	}
	return out, nil
}

// cleanup stops the daemon (by its PID), removes every pod, unmounts what is
// left under the roots, deletes the bridge and the temporary directory.
func cleanup(rc func(...string) *exec.Cmd, daemon *exec.Cmd, dir, root, runRoot string, keep bool) {
	daemon.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { daemon.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		log.Printf("daemon did not stop in 30s; killing pid %d", daemon.Process.Pid)
		daemon.Process.Kill()
		<-done
	}
	var pods []struct{ ID string }
	if out, err := rc("list", "-o", "json").Output(); err == nil {
		json.Unmarshal(out, &pods)
	}
	for _, p := range pods {
		if out, err := rc("rm", p.ID).CombinedOutput(); err != nil {
			log.Printf("rm %s: %v: %s", p.ID, err, out)
		}
	}
	if out, err := rc("gc").CombinedOutput(); err != nil {
		log.Printf("gc: %v: %s", err, out)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var left []string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (strings.HasPrefix(f[4], root) || strings.HasPrefix(f[4], runRoot)) {
			left = append(left, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(left))) // children first
	for _, m := range left {
		log.Printf("unmounting leftover %s", m)
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	exec.Command("ip", "link", "del", bridge).Run()
	if keep {
		log.Printf("kept %s", dir)
		return
	}
	// Keep the logs and report; drop the data roots.
	os.RemoveAll(root)
	os.RemoveAll(runRoot)
	log.Printf("logs and report left in %s", dir)
}

// specReport is the part of ginkgo's JSON report that is summarized.
type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
	Failure                 struct{ Message string }
}

func summarize(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading ginkgo report: %w", err)
	}
	var suites []struct{ SpecReports []specReport }
	if err := json.Unmarshal(b, &suites); err != nil {
		return fmt.Errorf("parsing ginkgo report: %w", err)
	}
	counts := map[string]int{}
	var failures []string
	for _, s := range suites {
		for _, r := range s.SpecReports {
			if r.LeafNodeType != "It" {
				if r.State != "passed" {
					failures = append(failures, fmt.Sprintf("[%s %s] %s", r.LeafNodeType, r.State, firstLine(r.Failure.Message)))
				}
				continue
			}
			counts[r.State]++
			if r.State != "passed" && r.State != "skipped" && r.State != "pending" {
				name := strings.Join(append(r.ContainerHierarchyTexts, r.LeafNodeText), " ")
				failures = append(failures, fmt.Sprintf("%s: %s", name, firstLine(r.Failure.Message)))
			}
		}
	}
	fmt.Printf("passed %d, failed %d, skipped %d (other states: %v)\n",
		counts["passed"], counts["failed"], counts["skipped"], counts)
	for _, f := range failures {
		fmt.Println("FAIL", f)
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d failures", len(failures))
	}
	return nil
}

// firstLine is the first line of a failure message, with the gRPC error
// appended when there is one ("failed to create PodSandbox: rpc error: …").
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	var rpc string
	if i := strings.Index(s, "rpc error: "); i >= 0 {
		rpc, _, _ = strings.Cut(s[i:], "\n")
	}
	s, _, _ = strings.Cut(s, "\n")
	if rpc != "" && !strings.Contains(s, rpc) {
		s += ": " + rpc
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
