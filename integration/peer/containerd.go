// Package peer runs the comparison peer of the harnesses (critest, e2enode,
// podbench): Debian's containerd (1.6) with its CRI plugin, private to one
// run.
//
// Everything it keeps is under the directory it is given, except what
// containerd 1.6 and libcni put in fixed host places whatever the config
// says: the shims' sockets (/run/containerd/s/<sha256>), libcni's result
// cache (/var/lib/cni/results/<network>-<id>-<if>) and the pods' cgroups
// (cgroupfs, under /k8s.io, critest's /test.slice or the parent a pod
// asks for). Stop removes those of its own pods, and the directories and
// cgroup parents if Start created them.
package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criNamespace is the containerd namespace the CRI plugin keeps its
// containers, tasks, images and snapshots in.
const criNamespace = "k8s.io"

// LogPrefix starts the lines Containerd writes to Log about itself.
const LogPrefix = "containerd peer: "

// Containerd is a private containerd: set the options, then Start it and
// Stop it when done.
type Containerd struct {
	// Dir holds its config, socket, data and CNI config (made if missing).
	Dir string
	// RegistryURL (e.g. "http://127.0.0.1:41591") is made a mirror of
	// each of MirrorHosts; none if MirrorHosts is empty.
	RegistryURL string
	MirrorHosts []string
	// Bridge and Subnet are the pod network's, a CNI bridge of its own
	// named NetName (by default "peer-"+Bridge).
	Bridge, Subnet, NetName string
	// NoNAT leaves out the bridge's ipMasq and the portmap plugin: no
	// iptables rules on the host.
	NoNAT bool
	// SandboxImage is the CRI plugin's sandbox (pause) image.
	SandboxImage string
	// RuncBinary is the runc the CRI plugin runs; "" for runc in PATH.
	RuncBinary string
	// DisableAppArmor turns off the CRI plugin's AppArmor profiles.
	DisableAppArmor bool
	// NoCRI disables the CRI plugin (then Bridge, Subnet, mirrors and
	// SandboxImage are unused): containerd for ctr only.
	NoCRI bool
	// Log gets containerd's output and the harness's lines about it.
	Log io.Writer

	sock        string
	cmd         *exec.Cmd
	exited      chan struct{} // closed when cmd has been waited for
	log         *tailBuffer
	newHostDirs []string // host directories that did not exist before the start
	newCgroups  []string // cgroup parents that did not exist before the start
	stopOnce    sync.Once
	stopErr     error
}

// cgroupParents are the cgroups (in every hierarchy) pods are put under:
// containerd's default parent without one in the pod's config, and
// critest's for runtimes that do not report their cgroup driver (1.6 does
// not implement RuntimeConfig, so critest asks for /test.slice).
var cgroupParents = []string{"k8s.io", "test.slice"}

// Socket is the path of containerd's gRPC socket, under Dir.
func (c *Containerd) Socket() string {
	dir, _ := filepath.Abs(c.Dir)
	return filepath.Join(dir, "containerd.sock")
}

// Endpoint is the CRI (and containerd) endpoint, "unix://" and Socket.
func (c *Containerd) Endpoint() string { return "unix://" + c.Socket() }

func (c *Containerd) netName() string {
	if c.NetName != "" {
		return c.NetName
	}
	return "peer-" + c.Bridge
}

// Start writes the CNI conflist and containerd's config under Dir, starts
// containerd (in a process group of its own) and waits until it serves
// (with CRI: until the CRI service reports its network ready). On failure
// it has stopped it again.
func (c *Containerd) Start() error {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return fmt.Errorf("containerd not found (Debian: apt-get install -y containerd): %w", err)
	}
	if _, err := exec.LookPath("ctr"); err != nil {
		return fmt.Errorf("ctr not found (it comes with containerd): %w", err)
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Dir, err = filepath.Abs(c.Dir); err != nil {
		return err
	}
	c.sock = c.Socket()
	c.exited = make(chan struct{})
	c.log = &tailBuffer{max: 16 << 10}
	if len(c.sock) > 100 {
		return fmt.Errorf("socket path %s is too long for a unix socket", c.sock)
	}
	if v, err := exec.Command(bin, "--version").Output(); err == nil {
		c.logf("starting %s", bytes.TrimSpace(v))
	}
	cfgPath, err := c.writeConfig()
	if err != nil {
		return err
	}
	for _, d := range []string{"/run/containerd", "/run/containerd/s", "/var/lib/cni", "/var/lib/cni/results"} {
		if _, err := os.Lstat(d); os.IsNotExist(err) {
			c.newHostDirs = append(c.newHostDirs, d)
		}
	}

	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	hierarchies = append(hierarchies, "/sys/fs/cgroup") // v2
	for _, h := range hierarchies {
		for _, p := range cgroupParents {
			if _, err := os.Lstat(filepath.Join(h, p)); os.IsNotExist(err) {
				c.newCgroups = append(c.newCgroups, filepath.Join(h, p))
			}
		}
	}

	c.cmd = exec.Command(bin, "--config", cfgPath)
	c.cmd.Stdout = io.MultiWriter(c.Log, c.log)
	c.cmd.Stderr = c.cmd.Stdout
	// Its own process group: a ^C at the terminal reaches the harness, which
	// then stops pods while containerd still serves.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return err
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	if err := c.waitReady(60 * time.Second); err != nil {
		c.Stop()
		return err
	}
	return nil
}

// writeConfig writes the CNI conflist and containerd's config and returns
// the config's path.
func (c *Containerd) writeConfig() (string, error) {
	cniDir := filepath.Join(c.Dir, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return "", err
	}
	if !c.NoCRI {
		if err := c.writeCNIConfig(cniDir); err != nil {
			return "", err
		}
	}

	const cri = `plugins."io.containerd.grpc.v1.cri"`
	required, disabled := `"io.containerd.grpc.v1.cri"`, ""
	if c.NoCRI {
		required, disabled = "", `"io.containerd.grpc.v1.cri", `
	}
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %[1]q
state = %[2]q
# CRI must load, or containerd fails to start (and says why).
required_plugins = [%[5]s]
# opt would create /opt/containerd; the others are snapshotters this host
# has no use for (they only fail to load, noisily).
disabled_plugins = [%[6]s"io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  level = "info"
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.sock, c.sock+".ttrpc", required, disabled)
	if !c.NoCRI {
		fmt.Fprintf(&b, `
[%[1]s]
  sandbox_image = %[2]q
  enable_selinux = false
  disable_apparmor = %[3]t
  # Never below containerd's own oom_score_adj: the sandbox's -998 fails
  # without CAP_SYS_RESOURCE (runc: "can't get final child's PID from
  # pipe"), which the harness may lack in a VM or container.
  restrict_oom_score_adj = true
  # Network namespaces under state, not /var/run/netns.
  netns_mounts_under_state_dir = true
  # The streaming server (exec, attach, port-forward) on loopback, on a
  # free port rather than the fixed default 10010.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[%[1]s.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[%[1]s.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[%[1]s.containerd.runtimes.runc.options]
  # This host has cgroup v1 managed through cgroupfs.
  SystemdCgroup = false
  # runc's state, by default /run/containerd/runc.
  Root = %[4]q
`, cri, c.SandboxImage, c.DisableAppArmor, filepath.Join(c.Dir, "runc"))
		if c.RuncBinary != "" {
			fmt.Fprintf(&b, "  BinaryName = %q\n", c.RuncBinary)
		}
		fmt.Fprintf(&b, `[%[1]s.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = %[2]q
  max_conf_num = 1
`, cri, cniDir)
		// A mirror is tried before the host itself, as runclet's mirrors
		// are; an http:// endpoint is spoken to in plain HTTP, no TLS
		// settings needed.
		for _, host := range c.MirrorHosts {
			fmt.Fprintf(&b, "[%s.registry.mirrors.%q]\n  endpoint = [%q]\n", cri, host, c.RegistryURL)
		}
	}
	p := filepath.Join(c.Dir, "containerd.toml")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// writeCNIConfig writes the pod network's conflist into cniDir.
func (c *Containerd) writeCNIConfig(cniDir string) error {
	defaultRoute := "0.0.0.0/0"
	if strings.Contains(c.Subnet, ":") {
		defaultRoute = "::/0"
	}
	// The same network runclet builds for itself (runtime/network's
	// builtinConfList). No loopback plugin: containerd's CRI plugin runs it
	// for every pod itself (go-cni's WithLoNetwork).
	plugins := []any{
		map[string]any{
			"type":        "bridge",
			"bridge":      c.Bridge,
			"isGateway":   true,
			"ipMasq":      !c.NoNAT,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": c.Subnet}}},
				"routes":  []map[string]string{{"dst": defaultRoute}},
				"dataDir": filepath.Join(c.Dir, "ipam"),
			},
		},
	}
	if !c.NoNAT {
		plugins = append(plugins, map[string]any{
			"type":         "portmap",
			"capabilities": map[string]bool{"portMappings": true},
			"snat":         true,
		})
	}
	conf := map[string]any{"cniVersion": "1.0.0", "name": c.netName(), "plugins": plugins}
	raw, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(cniDir, "10-"+c.netName()+".conflist"), raw, 0o644)
}

// waitReady waits until the CRI service answers and reports its network
// ready (the conflist loaded); with NoCRI, until ctr gets its version.
func (c *Containerd) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if c.NoCRI {
		for {
			out, err := exec.Command("ctr", "-a", c.sock, "version").CombinedOutput()
			if err == nil {
				c.logf("containerd ready on %s", c.sock)
				return nil
			}
			select {
			case <-c.exited:
				return fmt.Errorf("containerd exited (%v) before serving on %s; its log ends:\n%s", c.cmd.ProcessState, c.sock, c.log)
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("containerd did not serve on %s in %v (%v: %s); its log ends:\n%s", c.sock, timeout, err, bytes.TrimSpace(out), c.log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	var last error
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("containerd exited (%v) before serving CRI on %s; its log ends:\n%s", c.cmd.ProcessState, c.sock, c.log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not serve a ready CRI on %s in %v (%v); its log ends:\n%s", c.sock, timeout, last, c.log)
		}
		if _, err := os.Stat(c.sock); err != nil {
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
		var st *runtimeapi.StatusResponse
		if err == nil {
			st, err = rt.Status(ctx, &runtimeapi.StatusRequest{})
		}
		cancel()
		if err != nil {
			last = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		ready := true
		for _, cond := range st.GetStatus().GetConditions() {
			if !cond.Status {
				ready, last = false, fmt.Errorf("condition %s: %s: %s", cond.Type, cond.Reason, cond.Message)
			}
		}
		if ready {
			c.logf("%s %s (CRI %s) ready on %s", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion, c.sock)
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Running says whether containerd was started and still runs.
func (c *Containerd) Running() bool { return c.cmd != nil && c.exited != nil && c.running() }

func (c *Containerd) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

func (c *Containerd) logf(format string, args ...any) {
	fmt.Fprintf(c.Log, LogPrefix+format+"\n", args...)
}

// Stop stops containerd (by PID) and removes its pods' leftovers: via its
// CRI service and `ctr -n k8s.io` while it runs; then its shims by PID,
// mounts under Dir, the bridge, the network's nat rules and libcni cache
// entries, and its data directories (root, state, runc, ipam). Only the
// first call does anything; it says whether shims had to be killed or
// mounts could not be removed.
func (c *Containerd) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Containerd) stop() error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil // not started
	}
	var errs []error
	ids := map[string]bool{} // sandbox and container IDs seen
	if c.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		if !c.NoCRI {
			c.removePods(ctx, ids)
		}
		c.removeTasks(ctx, ids)
		cancel()
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			c.logf("containerd (pid %d) did not stop in 30s; killing it", c.cmd.Process.Pid)
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if n := c.killShims(ids); n > 0 {
		errs = append(errs, fmt.Errorf("killed %d shims of %s left after it stopped", n, c.sock))
		// Killed containers leave their (empty) cgroups.
		removeCgroups(ids)
	}
	left := c.unmountAll()
	if c.Bridge != "" && !c.NoCRI {
		if out, err := exec.Command("ip", "link", "del", c.Bridge).CombinedOutput(); err == nil {
			c.logf("deleted bridge %s", c.Bridge)
		} else if !strings.Contains(string(out), "Cannot find device") {
			c.logf("ip link del %s: %v: %s", c.Bridge, err, bytes.TrimSpace(out))
		}
		c.removeNatRules()
		c.removeCNICache(ids)
	}
	for id := range ids {
		// Shims killed after containerd died also leave their sockets.
		sum := sha256.Sum256([]byte(filepath.Join(c.sock, criNamespace, id)))
		os.Remove(fmt.Sprintf("/run/containerd/s/%x", sum))
	}
	// Children first.
	for i := len(c.newHostDirs) - 1; i >= 0; i-- {
		os.Remove(c.newHostDirs[i]) // only if empty
	}
	for _, cg := range c.newCgroups {
		syscall.Rmdir(cg) // only if empty: no cgroups or processes in it
	}
	if left > 0 {
		c.logf("%d mounts under %s could not be removed; keeping its data", left, c.Dir)
		return errors.Join(append(errs, fmt.Errorf("%d mounts under %s could not be removed", left, c.Dir))...)
	}
	for _, d := range []string{"root", "state", "runc", "ipam"} {
		if err := os.RemoveAll(filepath.Join(c.Dir, d)); err != nil {
			c.logf("removing %s: %v", d, err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removePods stops and removes every pod through the CRI service, which
// tears down their networks (CNI DEL) and mounts.
func (c *Containerd) removePods(ctx context.Context, ids map[string]bool) {
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.logf("CRI client: %v", err)
		return
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		c.logf("listing pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		ids[p.Id] = true
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			c.logf("stopping pod %s: %v", p.Id, err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			c.logf("removing pod %s: %v", p.Id, err)
		}
	}
	if len(pods.Items) > 0 {
		c.logf("removed %d pods left in containerd", len(pods.Items))
	}
}

// removeTasks kills and deletes whatever tasks and containers are left in
// the CRI namespace, with ctr.
func (c *Containerd) removeTasks(ctx context.Context, ids map[string]bool) {
	ctr := func(args ...string) ([]byte, error) {
		return exec.CommandContext(ctx, "ctr", append([]string{"-a", c.sock, "-n", criNamespace}, args...)...).CombinedOutput()
	}
	list := func(what string) []string {
		out, err := ctr(what, "ls", "-q")
		if err != nil {
			c.logf("ctr %s ls: %v: %s", what, err, bytes.TrimSpace(out))
			return nil
		}
		return strings.Fields(string(out))
	}
	for _, id := range list("tasks") {
		ids[id] = true
		c.logf("deleting leftover task %s", id)
		ctr("tasks", "kill", "-a", "-s", "SIGKILL", id)
		if out, err := ctr("tasks", "delete", "-f", id); err != nil {
			c.logf("ctr tasks delete %s: %v: %s", id, err, bytes.TrimSpace(out))
		}
	}
	for _, id := range list("containers") {
		ids[id] = true
		c.logf("deleting leftover container %s", id)
		if out, err := ctr("containers", "delete", id); err != nil {
			c.logf("ctr containers delete %s: %v: %s", id, err, bytes.TrimSpace(out))
		}
	}
}

// killShims kills, by PID, the shims this containerd started (their command
// line has its address) and the processes they run, adds their IDs (their
// pods') to ids and returns how many it killed.
func (c *Containerd) killShims(ids map[string]bool) int {
	n := 0
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
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") || !strings.Contains(string(cmdline), "\x00"+c.sock+"\x00") {
			continue
		}
		if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
			for _, k := range strings.Fields(string(kids)) {
				if kp, err := strconv.Atoi(k); err == nil {
					syscall.Kill(kp, syscall.SIGKILL)
				}
			}
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" {
				ids[args[i+1]] = true
			}
		}
		c.logf("killing leftover shim pid %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
		n++
	}
	if n > 0 {
		time.Sleep(500 * time.Millisecond) // for the kernel to reap them and their cgroups to empty
	}
	return n
}

// removeCgroups removes the cgroups (cgroupfs, v1 or v2) named after the
// given pod and container IDs: rmdir only takes empty ones.
func removeCgroups(ids map[string]bool) {
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.Count(p, "/") > 7 {
			return filepath.SkipDir
		}
		if ids[d.Name()] {
			syscall.Rmdir(p)
			return filepath.SkipDir
		}
		return nil
	})
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var left []string
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) <= 4 {
			continue
		}
		mp := strings.ReplaceAll(f[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			left = append(left, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(left)))
	return left
}

// unmountAll detaches every mount under the directory and returns how many
// are still there.
func (c *Containerd) unmountAll() int {
	for _, m := range mountsUnder(c.Dir) {
		c.logf("unmounting leftover %s", m)
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			c.logf("unmount %s: %v", m, err)
		}
	}
	return len(mountsUnder(c.Dir))
}

// removeNatRules deletes nat rules the bridge (ipMasq) and portmap plugins
// left for this network: rules whose comment names it, and the per-pod
// CNI-* chains they jump to. A pod removed through CRI leaves none.
func (c *Containerd) removeNatRules() {
	tool, save := "iptables", "iptables-save"
	if strings.Contains(c.Subnet, ":") {
		tool, save = "ip6tables", "ip6tables-save"
	}
	out, err := exec.Command(save, "-t", "nat").Output()
	if err != nil {
		return
	}
	mark := `name: \"` + c.netName() + `\"`
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, mark) {
			continue
		}
		args := splitRule(line)
		args[0] = "-D"
		if out, err := exec.Command(tool, append([]string{"-t", "nat"}, args...)...).CombinedOutput(); err != nil {
			c.logf("%s -t nat %s: %v: %s", tool, strings.Join(args, " "), err, bytes.TrimSpace(out))
			continue
		}
		c.logf("deleted leftover nat rule %s", line)
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-j" && strings.HasPrefix(args[i+1], "CNI-") && !strings.HasPrefix(args[i+1], "CNI-HOSTPORT-") {
				chains = append(chains, args[i+1])
			}
		}
	}
	for _, ch := range chains {
		exec.Command(tool, "-t", "nat", "-F", ch).Run()
		exec.Command(tool, "-t", "nat", "-X", ch).Run()
	}
}

// splitRule splits an iptables-save rule into arguments: fields separated
// by spaces, double quotes group, backslash escapes the next character.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inArg = true
		case ch == '"':
			quoted = !quoted
			inArg = true
		case ch == ' ' && !quoted:
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(ch)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// removeCNICache removes libcni's cached results for this network and for
// the loopback network containerd attaches (cni-loopback) of its pods.
func (c *Containerd) removeCNICache(ids map[string]bool) {
	const results = "/var/lib/cni/results"
	ents, _ := os.ReadDir(results)
	// Entries are <network>-<ID>-<interface>; this network's name the pods'
	// IDs even when containerd is gone.
	for _, e := range ents {
		if rest, ok := strings.CutPrefix(e.Name(), c.netName()+"-"); ok {
			id, _, _ := strings.Cut(rest, "-")
			ids[id] = true
		}
	}
	for _, e := range ents {
		n := e.Name()
		mine := strings.HasPrefix(n, c.netName()+"-")
		if rest, ok := strings.CutPrefix(n, "cni-loopback-"); ok {
			id, _, _ := strings.Cut(rest, "-")
			mine = ids[id]
		}
		if mine {
			c.logf("removing leftover CNI cache entry %s", n)
			os.Remove(filepath.Join(results, n))
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
