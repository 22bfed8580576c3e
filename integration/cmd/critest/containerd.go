package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
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

// The peer: Debian's containerd (1.6) with its CRI plugin, private to one
// run. Everything it keeps is under the directory it is given, except what
// containerd 1.6 and libcni put in fixed host places whatever the config
// says: the shims' sockets (/run/containerd/s/<sha256>), libcni's result
// cache (/var/lib/cni/results/<network>-<id>-<if>) and the pods' cgroups
// (cgroupfs, under /k8s.io or critest's /test.slice). Its stop function
// removes those of its own pods, and the directories and cgroup parents if
// it created them.

// criNamespace is the containerd namespace the CRI plugin keeps its
// containers, tasks, images and snapshots in.
const criNamespace = "k8s.io"

// containerd is a running private containerd.
type containerd struct {
	dir, sock, netName, bridge, subnet string
	cmd                                *exec.Cmd
	exited                             chan struct{} // closed when cmd has been waited for
	log                                *tailBuffer
	logw                               io.Writer
	newHostDirs                        []string // host directories that did not exist before the start
	newCgroups                         []string // cgroup parents that did not exist before the start
}

// cgroupParents are the cgroups (in every hierarchy) pods are put under:
// containerd's default parent without one in the pod's config, and
// critest's for runtimes that do not report their cgroup driver (1.6 does
// not implement RuntimeConfig, so critest asks for /test.slice).
var cgroupParents = []string{"k8s.io", "test.slice"}

// startContainerd starts a private containerd with its CRI plugin under dir,
// with registry mirrors for the given hosts pointing at registryURL (e.g.
// "http://127.0.0.1:41591"), pod network on a bridge of its own (name and
// subnet given) via a CNI conflist it writes, sandbox image set to
// sandboxImage; it returns the CRI endpoint ("unix:///...sock") and a stop
// function that stops containerd by PID, removes its pods' leftovers (via
// its CRI service and `ctr -n k8s.io` while it runs; then its shims by PID,
// mounts under dir, the bridge, the network's nat rules and libcni cache
// entries) and its data directories. containerd's output goes to logw.
func startContainerd(dir, registryURL string, mirrorHosts []string, bridge, subnet, sandboxImage string, logw io.Writer) (endpoint string, stop func(), err error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return "", nil, fmt.Errorf("containerd not found (Debian: apt-get install -y containerd): %w", err)
	}
	if _, err := exec.LookPath("ctr"); err != nil {
		return "", nil, fmt.Errorf("ctr not found (it comes with containerd): %w", err)
	}
	if logw == nil {
		logw = io.Discard
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	c := &containerd{
		dir:     dir,
		sock:    filepath.Join(dir, "containerd.sock"),
		netName: "critest-containerd-" + bridge,
		bridge:  bridge,
		subnet:  subnet,
		exited:  make(chan struct{}),
		log:     &tailBuffer{max: 16 << 10},
		logw:    logw,
	}
	if len(c.sock) > 100 {
		return "", nil, fmt.Errorf("socket path %s is too long for a unix socket", c.sock)
	}
	if v, err := exec.Command(bin, "--version").Output(); err == nil {
		fmt.Fprintf(logw, "critest harness: starting %s", v)
	}
	cfgPath, err := c.writeConfig(registryURL, mirrorHosts, sandboxImage)
	if err != nil {
		return "", nil, err
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
	c.cmd.Stdout = io.MultiWriter(logw, c.log)
	c.cmd.Stderr = c.cmd.Stdout
	// Its own process group: a ^C at the terminal reaches the harness, which
	// then stops pods while containerd still serves.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return "", nil, err
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	var once sync.Once
	stop = func() { once.Do(c.stop) }
	if err := c.waitReady(60 * time.Second); err != nil {
		stop()
		return "", nil, err
	}
	return "unix://" + c.sock, stop, nil
}

// writeConfig writes the CNI conflist and containerd's config and returns
// the config's path.
func (c *containerd) writeConfig(registryURL string, mirrorHosts []string, sandboxImage string) (string, error) {
	cniDir := filepath.Join(c.dir, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return "", err
	}
	defaultRoute := "0.0.0.0/0"
	if strings.Contains(c.subnet, ":") {
		defaultRoute = "::/0"
	}
	// The same network runclet builds for itself (runtime/network's
	// builtinConfList). No loopback plugin: containerd's CRI plugin runs it
	// for every pod itself (go-cni's WithLoNetwork).
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       c.netName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      c.bridge,
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": c.subnet}}},
					"routes":  []map[string]string{{"dst": defaultRoute}},
					"dataDir": filepath.Join(c.dir, "ipam"),
				},
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
				"snat":         true,
			},
		},
	}
	raw, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(cniDir, "10-"+c.netName+".conflist"), raw, 0o644); err != nil {
		return "", err
	}

	const cri = `plugins."io.containerd.grpc.v1.cri"`
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %[1]q
state = %[2]q
# CRI must load, or containerd fails to start (and says why).
required_plugins = ["io.containerd.grpc.v1.cri"]
# opt would create /opt/containerd; the others are snapshotters this host
# has no use for (they only fail to load, noisily).
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  level = "info"

[%[5]s]
  sandbox_image = %[6]q
  enable_selinux = false
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
[%[5]s.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[%[5]s.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[%[5]s.containerd.runtimes.runc.options]
  # This host has cgroup v1 managed through cgroupfs.
  SystemdCgroup = false
  # runc's state, by default /run/containerd/runc.
  Root = %[7]q
[%[5]s.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = %[8]q
  max_conf_num = 1
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.sock, c.sock+".ttrpc",
		cri, sandboxImage, filepath.Join(c.dir, "runc"), cniDir)
	// A mirror is tried before the host itself, as runclet's mirrors are; an
	// http:// endpoint is spoken to in plain HTTP, no TLS settings needed.
	for _, host := range mirrorHosts {
		fmt.Fprintf(&b, "[%s.registry.mirrors.%q]\n  endpoint = [%q]\n", cri, host, registryURL)
	}
	p := filepath.Join(c.dir, "containerd.toml")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// waitReady waits until the CRI service answers and reports its network
// ready (the conflist loaded).
func (c *containerd) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
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
			fmt.Fprintf(c.logw, "critest harness: %s %s (CRI %s) ready on %s\n", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion, c.sock)
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *containerd) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

func (c *containerd) logf(format string, args ...any) {
	fmt.Fprintf(c.logw, "critest harness: "+format+"\n", args...)
}

// stop stops containerd and removes what its pods left.
func (c *containerd) stop() {
	ids := map[string]bool{} // sandbox and container IDs seen
	if c.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		c.removePods(ctx, ids)
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
	if c.killShims(ids) > 0 {
		// Killed containers leave their (empty) cgroups.
		removeCgroups(ids)
	}
	left := c.unmountAll()
	if out, err := exec.Command("ip", "link", "del", c.bridge).CombinedOutput(); err == nil {
		c.logf("deleted bridge %s", c.bridge)
	} else if !strings.Contains(string(out), "Cannot find device") {
		c.logf("ip link del %s: %v: %s", c.bridge, err, bytes.TrimSpace(out))
	}
	c.removeNatRules()
	c.removeCNICache(ids)
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
		c.logf("%d mounts under %s could not be removed; keeping its data", left, c.dir)
		return
	}
	for _, d := range []string{"root", "state", "runc", "ipam"} {
		if err := os.RemoveAll(filepath.Join(c.dir, d)); err != nil {
			c.logf("removing %s: %v", d, err)
		}
	}
}

// removePods stops and removes every pod through the CRI service, which
// tears down their networks (CNI DEL) and mounts.
func (c *containerd) removePods(ctx context.Context, ids map[string]bool) {
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
func (c *containerd) removeTasks(ctx context.Context, ids map[string]bool) {
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
func (c *containerd) killShims(ids map[string]bool) int {
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
func (c *containerd) unmountAll() int {
	for _, m := range mountsUnder(c.dir) {
		c.logf("unmounting leftover %s", m)
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			c.logf("unmount %s: %v", m, err)
		}
	}
	return len(mountsUnder(c.dir))
}

// removeNatRules deletes nat rules the bridge (ipMasq) and portmap plugins
// left for this network: rules whose comment names it, and the per-pod
// CNI-* chains they jump to. A pod removed through CRI leaves none.
func (c *containerd) removeNatRules() {
	tool, save := "iptables", "iptables-save"
	if strings.Contains(c.subnet, ":") {
		tool, save = "ip6tables", "ip6tables-save"
	}
	out, err := exec.Command(save, "-t", "nat").Output()
	if err != nil {
		return
	}
	mark := `name: \"` + c.netName + `\"`
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
func (c *containerd) removeCNICache(ids map[string]bool) {
	const results = "/var/lib/cni/results"
	ents, _ := os.ReadDir(results)
	// Entries are <network>-<ID>-<interface>; this network's name the pods'
	// IDs even when containerd is gone.
	for _, e := range ents {
		if rest, ok := strings.CutPrefix(e.Name(), c.netName+"-"); ok {
			id, _, _ := strings.Cut(rest, "-")
			ids[id] = true
		}
	}
	for _, e := range ents {
		n := e.Name()
		mine := strings.HasPrefix(n, c.netName+"-")
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
