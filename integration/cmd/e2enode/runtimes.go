package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// waitSocket waits until a unix socket accepts connections.
func waitSocket(path string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before serving %s:\n%s", p.name, p.err, path, p.logTail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not serve %s in %v:\n%s", p.name, path, timeout, p.logTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runcletRuntime is a private `runclet daemon`: its own config, data root,
// run root and socket, the built-in bridge network on rcle2e0, and every
// registry host mirrored to the test registry.
type runcletRuntime struct {
	bin, dir         string
	root, runRoot    string
	cfg, sock, log   string
	metricsAddr      string
	daemon           *proc
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
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	r.metricsAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfg := fmt.Sprintf("[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = %q\n\n[cri]\nmetrics_address = %q\n\n",
		filepath.Join(dir, "no-cni-configs"), bridgeName, podSubnet, r.metricsAddr)
	for _, host := range []string{"registry.k8s.io", "docker.io", "gcr.io", "quay.io"} {
		cfg += fmt.Sprintf("[registries.%q]\nmirrors = [%q]\n", host, registryURL)
	}
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return r, nil
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
	p, err := startProc("runclet daemon", r.log, r.bin, "--config", r.cfg, "--root", r.root, "--run-root", r.runRoot,
		"daemon", "--listen", "unix://"+r.sock, "--log-level", "debug")
	if err != nil {
		return err
	}
	r.daemon = p
	if err := waitSocket(r.sock, p, 30*time.Second); err != nil {
		return err
	}
	r.daemonStartTimes = append(r.daemonStartTimes, time.Since(t0))
	return nil
}

func (r *runcletRuntime) stopDaemon() {
	r.daemon.stop(30 * time.Second)
}

// restart stops the daemon (SIGTERM, by PID) and starts it again on the
// same roots; pods keep running in their supervisors meanwhile.
func (r *runcletRuntime) restart(down time.Duration) error {
	r.stopDaemon()
	if err := r.daemon.err; err != nil {
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
// with its CRI plugin: own config, root, state, socket, a CNI bridge on
// rcle2e0, the test registry as mirror of every registry host, and the
// sandbox image served from it.
type containerdRuntime struct {
	dir, cfg, sock, log string
	daemon              *proc
}

func newContainerdRuntime(dir, registryURL string) (*containerdRuntime, error) {
	if _, err := exec.LookPath("containerd"); err != nil {
		return nil, fmt.Errorf("containerd not found (Debian: apt-get install -y containerd): %w", err)
	}
	c := &containerdRuntime{dir: dir, cfg: filepath.Join(dir, "config.toml"), sock: filepath.Join(dir, "containerd.sock"),
		log: filepath.Join(dir, "containerd.log")}
	cniDir := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cniDir, 0o700); err != nil {
		return nil, err
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "e2enode",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": bridgeName, "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": podSubnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(dir, "ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	raw, _ := json.MarshalIndent(conf, "", "  ")
	if err := os.WriteFile(filepath.Join(cniDir, "10-e2enode.conflist"), raw, 0o644); err != nil {
		return nil, err
	}
	const p = `plugins."io.containerd.grpc.v1.cri"`
	cfg := fmt.Sprintf(`version = 2
root = %[2]q
state = %[3]q
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %[4]q
[ttrpc]
  address = %[5]q
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = %[6]q
[%[1]s]
  sandbox_image = %[7]q
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[%[1]s.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[%[1]s.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[%[1]s.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = %[8]q
[%[1]s.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = %[9]q
  max_conf_num = 1
`, p, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc",
		filepath.Join(dir, "root", "overlayfs"), pauseImage, filepath.Join(dir, "runc"), cniDir)
	for _, host := range []string{"registry.k8s.io", "docker.io", "gcr.io", "quay.io"} {
		cfg += fmt.Sprintf("[%s.registry.mirrors.%q]\n  endpoint = [%q]\n", p, host, registryURL)
	}
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *containerdRuntime) name() string     { return "containerd" }
func (c *containerdRuntime) endpoint() string { return "unix://" + c.sock }
func (c *containerdRuntime) logPath() string  { return c.log }

// hostDirs: the shim's socket directory and libcni's result cache are
// outside containerd's configured directories whatever the config says.
func (c *containerdRuntime) hostDirs() []string {
	return []string{"/run/containerd", "/run/containerd/s", "/var/lib/cni", "/var/lib/cni/results"}
}

func (c *containerdRuntime) start() error {
	p, err := startProc("containerd", c.log, "containerd", "--config", c.cfg)
	if err != nil {
		return err
	}
	c.daemon = p
	return waitSocket(c.sock, p, 30*time.Second)
}

func (c *containerdRuntime) stopDaemon() { c.daemon.stop(30 * time.Second) }

// cleanup kills the shims of this containerd (found by the address in
// their command line: processes this run started) and what they ran, by
// PID. containerd's own state is under our directory and goes with it.
func (c *containerdRuntime) cleanup() {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") || !strings.Contains(string(cmdline), c.sock) {
			continue
		}
		// The shim's children are the containers' init processes.
		if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
			for _, k := range strings.Fields(string(kids)) {
				if kp, err := strconv.Atoi(k); err == nil {
					syscall.Kill(kp, syscall.SIGKILL)
				}
			}
		}
		log.Printf("killing containerd shim pid %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(500 * time.Millisecond)
}
