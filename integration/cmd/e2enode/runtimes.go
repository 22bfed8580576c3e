package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/runclet/runclet/integration/kube"
	"github.com/runclet/runclet/integration/leakcheck"
	"github.com/runclet/runclet/integration/peer"
)

const (
	bridgeName = "rcle2e0"
	podSubnet  = "10.217.0.0/24"
)

// criRuntime is the container runtime kubelet runs on: a private runclet
// daemon or a private containerd.
type criRuntime interface {
	name() string
	endpoint() string // unix:///...
	start() error
	// running says whether the daemon was started and still runs.
	running() bool
	// stopDaemon stops the daemon only (pods keep running where the
	// runtime allows it).
	stopDaemon()
	// cleanup removes every pod the runtime still has, with whatever they
	// left on the host, after stopDaemon.
	cleanup()
	// hostDirs are host directories the runtime may make outside its own.
	hostDirs() []string
	logPath() string
}

// runcletRuntime is a private `runclet daemon`: its own config, data root,
// run root and socket, the built-in bridge network on rcle2e0, and every
// registry host mirrored to the test registry.
type runcletRuntime struct {
	bin, dir         string
	root, runRoot    string
	cfg, sock, log   string
	metricsAddr      string
	daemon           *kube.Proc
	restarts         int
	registryURL      string
	daemonStartTimes []time.Duration
}

func newRuncletRuntime(bin, dir, registryURL string) (*runcletRuntime, error) {
	r := &runcletRuntime{bin: bin, dir: dir, registryURL: registryURL,
		root: filepath.Join(dir, "root"), runRoot: filepath.Join(dir, "run"),
		cfg: filepath.Join(dir, "runclet.toml"), sock: filepath.Join(dir, "runclet.sock"),
		log: filepath.Join(dir, "daemon.log")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ports, err := kube.FreePorts(1)
	if err != nil {
		return nil, err
	}
	r.metricsAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	// The runtimeclass-fly scenario needs the fly handler, which the CRI
	// serves only when enabled.
	cfg := fmt.Sprintf("[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = %q\n\n[cri]\nmetrics_address = %q\n\n[cri.fly]\nenable = true\n\n",
		filepath.Join(dir, "no-cni-configs"), bridgeName, podSubnet, r.metricsAddr)
	for _, host := range []string{"registry.k8s.io", "docker.io", "gcr.io", "quay.io"} {
		cfg += fmt.Sprintf("[registries.%q]\nmirrors = [%q]\n", host, registryURL)
	}
	// The images are the harness's own, served from its registry: the
	// trust policy accepts them unchecked (the default refuses unsigned).
	for _, host := range []string{"127.0.0.1", "registry.k8s.io", "docker.io", "gcr.io", "quay.io"} {
		cfg += fmt.Sprintf("[[trust.rules]]\nprefix = %q\naction = \"accept\"\n", host)
	}
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return r, nil
}

// leakScope is where the daemon keeps what it makes; cgroupRoot is
// kubelet's, in which no process may be left once every pod is gone.
func (r *runcletRuntime) leakScope(cgroupRoot string) (leakcheck.Scope, error) {
	pods, err := leakcheck.WatchPods(r.root)
	if err != nil {
		return leakcheck.Scope{}, err
	}
	return leakcheck.Scope{Root: r.root, RunRoot: r.runRoot, Bridge: bridgeName, Pods: pods, PodCgroupParent: "/runclet",
		CgroupProcRoots: []string{cgroupRoot}, IPAMDirs: []string{filepath.Join(r.root, "cni", "networks"), "/var/lib/cni/networks"}}, nil
}

func (r *runcletRuntime) name() string       { return "runclet" }
func (r *runcletRuntime) endpoint() string   { return "unix://" + r.sock }
func (r *runcletRuntime) logPath() string    { return r.log }
func (r *runcletRuntime) hostDirs() []string { return []string{"/var/lib/cni", "/var/lib/cni/results"} }

func (r *runcletRuntime) cli(args ...string) *exec.Cmd {
	return exec.Command(r.bin, append([]string{"--config", r.cfg, "--root", r.root, "--run-root", r.runRoot}, args...)...)
}

func (r *runcletRuntime) start() error {
	t0 := time.Now()
	p, err := kube.StartProc("runclet daemon", r.log, r.bin, "--config", r.cfg, "--root", r.root, "--run-root", r.runRoot,
		"daemon", "--listen", "unix://"+r.sock, "--log-level", "debug")
	if err != nil {
		return err
	}
	r.daemon = p
	if err := kube.WaitSocket(r.sock, p, 30*time.Second); err != nil {
		return err
	}
	r.daemonStartTimes = append(r.daemonStartTimes, time.Since(t0))
	return nil
}

func (r *runcletRuntime) running() bool { return r.daemon != nil && !r.daemon.Exited() }

func (r *runcletRuntime) stopDaemon() {
	r.daemon.Stop(30 * time.Second)
}

// restart stops the daemon (SIGTERM, by PID) and starts it again on the
// same roots; pods keep running in their supervisors meanwhile.
func (r *runcletRuntime) restart(down time.Duration) error {
	r.stopDaemon()
	if err := r.daemon.Err; err != nil {
		log.Printf("runclet daemon exited with %v", err)
	}
	time.Sleep(down)
	r.restarts++
	return r.start()
}

func (r *runcletRuntime) cleanup() {
	var pods []struct{ ID string }
	if out, err := r.cli("list", "-o", "json").Output(); err == nil {
		json.Unmarshal(out, &pods)
	}
	for _, p := range pods {
		if out, err := r.cli("rm", p.ID).CombinedOutput(); err != nil {
			log.Printf("runclet rm %s: %v: %s", p.ID, err, out)
		}
	}
	if len(pods) > 0 {
		log.Printf("removed %d pods kubelet left in runclet", len(pods))
	}
	if out, err := r.cli("gc").CombinedOutput(); err != nil {
		log.Printf("runclet gc: %v: %s", err, out)
	}
}

// containerdRuntime is a private containerd (Debian's /usr/bin/containerd)
// with its CRI plugin, a peer.Containerd: own config, root, state, socket,
// a CNI bridge on rcle2e0, the test registry as mirror of every registry
// host, and the sandbox image served from it.
type containerdRuntime struct {
	dir, log string
	ctd      *peer.Containerd
	logf     *os.File
}

func newContainerdRuntime(dir, registryURL string) (*containerdRuntime, error) {
	if _, err := exec.LookPath("containerd"); err != nil {
		return nil, fmt.Errorf("containerd not found (Debian: apt-get install -y containerd): %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &containerdRuntime{dir: dir, log: filepath.Join(dir, "containerd.log"), ctd: &peer.Containerd{
		Dir: dir, RegistryURL: registryURL, MirrorHosts: []string{"registry.k8s.io", "docker.io", "gcr.io", "quay.io"},
		Bridge: bridgeName, Subnet: podSubnet, NetName: "e2enode", SandboxImage: pauseImage, DisableAppArmor: true,
	}}, nil
}

func (c *containerdRuntime) name() string     { return "containerd" }
func (c *containerdRuntime) endpoint() string { return c.ctd.Endpoint() }
func (c *containerdRuntime) logPath() string  { return c.log }

// hostDirs: the shim's socket directory and libcni's result cache are
// outside containerd's configured directories whatever the config says.
func (c *containerdRuntime) hostDirs() []string {
	return []string{"/run/containerd", "/run/containerd/s", "/var/lib/cni", "/var/lib/cni/results"}
}

func (c *containerdRuntime) running() bool { return c.ctd.Running() }

func (c *containerdRuntime) start() error {
	f, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	c.logf, c.ctd.Log = f, f
	return c.ctd.Start()
}

// stopDaemon stops containerd and, with it, removes what its pods left
// (peer.Containerd.Stop: its shims by PID, mounts, the bridge, nat rules,
// libcni cache); cleanup has nothing left to do.
func (c *containerdRuntime) stopDaemon() {
	if err := c.ctd.Stop(); err != nil {
		log.Printf("containerd: %v", err)
	}
	if c.logf != nil {
		c.logf.Close()
	}
}

func (c *containerdRuntime) cleanup() { c.stopDaemon() }
