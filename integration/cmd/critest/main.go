// Command critest runs cri-tools' critest (v1.37.0) against a private
// `runclet daemon`: it builds and caches the critest binary, builds the test
// images critest pulls and serves them from an in-process registry that
// registry.k8s.io, gcr.io, k8s.gcr.io and docker.io are mirrored to, runs
// critest, prints a summary and cleans up (daemon, pods, mounts, bridge).
//
//	go run ./integration/cmd/critest -runclet bin/runclet [-focus RE] [-skip RE] [-nri]
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

	"github.com/runclet/runclet/integration/leakcheck"
	"github.com/runclet/runclet/integration/peer"
	"github.com/runclet/runclet/integration/testregistry"
)

const (
	criToolsVersion = "v1.37.0"
	bridge          = "rclcrit0"
	subnet          = "10.216.0.0/24"
)

type options struct {
	runclet, critestBin, focus, skip string
	cgroupDriver                     string
	timeout                          time.Duration
	keep, nri, websocket, containerd bool
	minRun                           int
}

func main() {
	var o options
	flag.StringVar(&o.runclet, "runclet", "bin/runclet", "runclet binary")
	flag.StringVar(&o.critestBin, "critest", "", "critest binary (default: build and cache cri-tools "+criToolsVersion+"'s)")
	flag.StringVar(&o.focus, "focus", "", "ginkgo focus regexp")
	flag.StringVar(&o.skip, "skip", "", "ginkgo skip regexp")
	flag.DurationVar(&o.timeout, "timeout", 90*time.Minute, "ginkgo timeout of the whole run")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, report)")
	flag.BoolVar(&o.nri, "nri", false, "enable NRI in the daemon on a private socket and run critest with --nri-socket (its NRI specs)")
	flag.BoolVar(&o.websocket, "websocket", false, "streaming specs over WebSocket instead of SPDY (--websocket-exec/-attach/-portforward)")
	flag.IntVar(&o.minRun, "min-run", 1, "fail unless at least this many specs ran (passed or failed): a focus that matches nothing proves nothing")
	flag.BoolVar(&o.containerd, "containerd", false, "run critest against a private instance of the host's containerd instead (the peer; results are reported, not enforced)")
	flag.StringVar(&o.cgroupDriver, "cgroup-driver", "cgroupfs", "runclet's cgroup.driver: cgroupfs or systemd (systemd as PID 1 needed; make vmtest runs it)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("critest: ")
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

func run(o options) (retErr error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root")
	}
	if o.containerd && o.nri {
		return fmt.Errorf("-nri is runclet's; Debian's containerd 1.6 has no NRI of this version")
	}
	runclet, err := filepath.Abs(o.runclet)
	if err != nil {
		return err
	}
	critestBin := o.critestBin
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
	endpoint := "unix://" + sock
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
	mirrored := []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io", "docker.io"}

	if o.containerd {
		logf, err := os.Create(filepath.Join(dir, "containerd.log"))
		if err != nil {
			return err
		}
		defer logf.Close()
		ctd := &peer.Containerd{Dir: filepath.Join(dir, "containerd"), RegistryURL: reg.URL(), MirrorHosts: mirrored,
			Bridge: "rclcritc0", Subnet: "10.216.1.0/24", NetName: "critest-containerd-rclcritc0",
			SandboxImage: "registry.k8s.io/pause:3.9", Log: logf}
		if err := ctd.Start(); err != nil {
			return err
		}
		defer func() {
			if err := ctd.Stop(); err != nil {
				log.Printf("stopping containerd: %v", err)
			}
			log.Printf("logs and report left in %s", dir)
		}()
		endpoint = ctd.Endpoint()
	}

	cfg := fmt.Sprintf("[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = %q\n",
		filepath.Join(dir, "no-cni-configs"), bridge, subnet)
	for _, host := range mirrored {
		cfg += fmt.Sprintf("[registries.%q]\nmirrors = [%q]\n", host, reg.URL())
	}
	// The images are the harness's own, served from its registry: the
	// trust policy accepts them unchecked (the default refuses unsigned).
	for _, host := range append([]string{"127.0.0.1"}, mirrored...) {
		cfg += fmt.Sprintf("[[trust.rules]]\nprefix = %q\naction = \"accept\"\n", host)
	}
	if o.cgroupDriver != "cgroupfs" {
		cfg += fmt.Sprintf("[cgroup]\ndriver = %q\n", o.cgroupDriver)
	}
	nriSock := filepath.Join(dir, "nri.sock")
	if o.nri {
		// critest holds a plugin's Synchronize open for 2s, NRI's default
		// request timeout, so the daemon gets more.
		cfg += fmt.Sprintf("[nri]\nenable = true\nsocket_path = %q\nrequest_timeout = \"10s\"\n", nriSock)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	rc := func(args ...string) *exec.Cmd {
		return exec.Command(runclet, append([]string{"--config", cfgPath, "--root", root, "--run-root", runRoot}, args...)...)
	}

	if !o.containerd {
		daemonLog, err := os.Create(filepath.Join(dir, "daemon.log"))
		if err != nil {
			return err
		}
		defer daemonLog.Close()
		pods, err := leakcheck.WatchPods(root)
		if err != nil {
			return err
		}
		defer pods.Close()
		parent := "/runclet"
		if o.cgroupDriver == "systemd" {
			parent = "/runclet.slice"
		}
		scope := leakcheck.Scope{Root: root, RunRoot: runRoot, Bridge: bridge, Pods: pods, PodCgroupParent: parent,
			SystemdSlices: o.cgroupDriver == "systemd", IPAMDirs: []string{filepath.Join(root, "cni", "networks")}}
		before := leakcheck.Take(scope)
		daemon := rc("daemon", "--listen", endpoint)
		daemon.Stdout, daemon.Stderr = daemonLog, daemonLog
		if err := daemon.Start(); err != nil {
			return err
		}
		defer func() {
			leaks := cleanup(rc, daemon, dir, root, runRoot, o.keep, func() []string { return before.Leaks(scope) })
			if len(leaks) > 0 && retErr == nil {
				retErr = fmt.Errorf("runclet left %d objects after critest removed its pods (listed above as LEAK)", len(leaks))
			}
		}()
		for i := 0; ; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if i == 100 {
				return fmt.Errorf("daemon did not create %s in 10s; see %s", sock, daemonLog.Name())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report := filepath.Join(dir, "report.json")
	args := []string{
		"--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
		"--ginkgo.v", "--ginkgo.timeout", o.timeout.String(), "--ginkgo.json-report", report,
	}
	if o.focus != "" {
		args = append(args, "--ginkgo.focus", o.focus)
	}
	if o.skip != "" {
		args = append(args, "--ginkgo.skip", o.skip)
	}
	if o.nri {
		args = append(args, "--nri-socket", nriSock)
	}
	if o.websocket {
		args = append(args, "--websocket-exec", "--websocket-attach", "--websocket-portforward")
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
	if o.containerd {
		summarize(report, 0) // the peer's results are reported, not judged
		return nil
	}
	return summarize(report, o.minRun)
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

// cleanup stops the daemon (by its PID), counts what runclet left (critest
// removes every pod it made, so any pod, mount, namespace, veth, address,
// cgroup or process left is runclet's leak), then removes every pod,
// unmounts what is left under the roots, deletes the bridge and the
// temporary directory. It returns the leaks it counted.
func cleanup(rc func(...string) *exec.Cmd, daemon *exec.Cmd, dir, root, runRoot string, keep bool, census func() []string) []string {
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
	leaks := census()
	for _, l := range leaks {
		log.Printf("LEAK %s", l)
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
		return leaks
	}
	// Keep the logs and report; drop the data roots.
	os.RemoveAll(root)
	os.RemoveAll(runRoot)
	log.Printf("logs and report left in %s", dir)
	return leaks
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
