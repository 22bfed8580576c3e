// Command conformance brings up a local multi-node Kubernetes cluster whose
// nodes run runclet, and runs upstream's e2e Conformance tests on it.
//
// The control plane runs on the host: etcd (Debian's etcd-server),
// kube-apiserver (Node and RBAC authorization, ServiceAccount tokens, the
// default admission plugins and NodeRestriction), kube-controller-manager,
// kube-scheduler and CoreDNS as the cluster DNS (the kube-dns Service).
// Each of the N nodes (default 2) is a network namespace with a veth to
// the host bridge rclk8s0 and an address of its own (10.240.0.10+i), in
// which its own `runclet daemon` (own data root, run root, socket, CNI
// bridge on pod CIDR 10.241.i.0/24), kubelet and kube-proxy (iptables
// mode) run; routes join the nodes' pod CIDRs. The e2e test images are
// built here (test/utils/image/manifest.go of Kubernetes v1.37.2) and
// served by a registry on the bridge, the e2e framework pointed at it with
// KUBE_TEST_REPO_LIST.
//
//	go run ./integration/cmd/conformance -runclet bin/runclet          # make e2e-conformance
//	go run ./integration/cmd/conformance -runclet bin/runclet -up      # make cluster: up until Ctrl-C
//
// The suite is e2e.test with --provider=skeleton: the specs matching
// -focus that are not [Serial] with ginkgo in parallel, then the [Serial]
// ones alone. Every spec that does not pass must be listed, with its
// state and reason, in the expected-results file; any other result fails
// the run. At the end every process is stopped by its PID and everything
// made on the host is removed: pods through the CRI, mounts, the nodes'
// namespaces, links, routes and iptables rules, cgroups, sysctls,
// /var/log/containers links and the directories runclet or kubelet made.
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
	"strings"
	"syscall"
	"time"

	"github.com/runclet/runclet/integration/kube"
	"github.com/runclet/runclet/integration/testregistry"
)

type options struct {
	runclet   string
	nodes     int
	up        bool
	focus     string
	skip      string
	expected  string
	procs     int
	k8sBin    string
	etcd      string
	coredns   string
	keep      bool
	timeout   time.Duration
	buildOnly bool
	report    string
	judgeDir  string
}

func main() {
	var o options
	flag.StringVar(&o.runclet, "runclet", "bin/runclet", "runclet binary (stage1-runc next to it)")
	flag.IntVar(&o.nodes, "nodes", 2, "number of nodes")
	flag.BoolVar(&o.up, "up", false, "bring the cluster up, print how to use it, and keep it up until interrupted (Ctrl-C or SIGTERM), then tear it down; no tests")
	flag.StringVar(&o.focus, "focus", `\[sig-node\].*\[Conformance\]`, "ginkgo focus regexp of the specs to run")
	flag.StringVar(&o.skip, "skip", "", "ginkgo skip regexp")
	flag.StringVar(&o.expected, "expected", "integration/cmd/conformance/expected-results.txt", "the specs expected not to pass, with reasons")
	flag.IntVar(&o.procs, "procs", 4, "ginkgo parallel processes for the parallel-safe specs")
	flag.StringVar(&o.k8sBin, "k8s-bin", "", "directory with the Kubernetes binaries (default: build and cache Kubernetes "+kube.Version+"'s)")
	flag.StringVar(&o.etcd, "etcd", "", "etcd binary (default: Debian's etcd-server, fetched with apt-get download and cached)")
	flag.StringVar(&o.coredns, "coredns", "", "coredns binary (default: built from the Go module proxy and cached)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs of every daemon, reports)")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Hour, "bound on the whole run")
	flag.BoolVar(&o.buildOnly, "build-only", false, "build (or find cached) every binary, print where, and exit")
	flag.StringVar(&o.report, "report", "", "write the per-spec results (state | name | took) to this file")
	flag.StringVar(&o.judgeDir, "judge", "", "judge the ginkgo reports kept (-keep) in this run directory against -expected again, without a cluster")
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("conformance: ")
	if err := run(o); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

var clusterTools = []kube.Tool{kube.Kubelet, kube.KubeAPIServer, kube.Kubectl, kube.KubeControllerManager, kube.KubeScheduler,
	kube.KubeProxy, kube.Agnhost, kube.Nnp}

var suiteTools = []kube.Tool{kube.Ginkgo, kube.E2ETest}

func run(o options) (err error) {
	t0 := time.Now()
	tools := clusterTools
	if !o.up {
		tools = append(tools, suiteTools...)
	}
	if o.buildOnly {
		dir, err := kube.Binaries(o.k8sBin, append(clusterTools, suiteTools...)...)
		if err != nil {
			return err
		}
		etcd, err := kube.Etcd(o.etcd)
		if err != nil {
			return err
		}
		dns, err := kube.CoreDNS(o.coredns)
		if err != nil {
			return err
		}
		log.Printf("Kubernetes binaries in %s; etcd %s; coredns %s (%v)", dir, etcd, dns, time.Since(t0).Round(time.Second))
		return nil
	}
	if o.judgeDir != "" {
		expected, err := readExpected(o.expected)
		if err != nil {
			return err
		}
		res := &suiteResult{}
		for _, part := range []string{"parallel", "serial"} {
			specs, err := readReport(filepath.Join(o.judgeDir, "report-"+part+".json"))
			if err != nil {
				return err
			}
			res.specs = append(res.specs, specs...)
		}
		if !res.judge(expected, o.report) {
			return fmt.Errorf("results differ from %s (listed above)", o.expected)
		}
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root")
	}
	if o.nodes < 1 || o.nodes > 200 {
		return fmt.Errorf("-nodes: 1 to 200")
	}
	var expected map[string]expectation
	if !o.up {
		if expected, err = readExpected(o.expected); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	runclet, err := filepath.Abs(o.runclet)
	if err != nil {
		return err
	}
	if _, err := os.Stat(runclet); err != nil {
		return fmt.Errorf("runclet binary: %w (run make build)", err)
	}
	k8sBin, err := kube.Binaries(o.k8sBin, tools...)
	if err != nil {
		return err
	}
	etcdBin, err := kube.Etcd(o.etcd)
	if err != nil {
		return err
	}
	corednsBin, err := kube.CoreDNS(o.coredns)
	if err != nil {
		return err
	}
	k8sSrc, err := kube.SourceDir()
	if err != nil {
		return err
	}
	log.Printf("binaries ready (%v)", time.Since(t0).Round(time.Second))
	if err := checkFree(o.nodes); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "runclet-conformance-")
	if err != nil {
		return err
	}
	c := &cluster{dir: dir, k8sBin: k8sBin, etcdBin: etcdBin, corednsBin: corednsBin, runclet: runclet,
		cgroupRoot: "/" + filepath.Base(dir)}
	cgroupRoots := []string{c.cgroupRoot}
	for i := 1; i <= o.nodes; i++ {
		n := &node{nodeNet: newNodeNet(i), dir: c.path(fmt.Sprintf("node%d", i))}
		n.cgroupRoot = c.cgroupRoot + "/" + n.name
		cgroupRoots = append(cgroupRoots, n.cgroupRoot)
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return err
		}
		c.nodes = append(c.nodes, n)
	}
	host, err := kube.SaveHost(cgroupRoots, []string{"/var/log/containers", "/var/lib/cni", "/var/lib/cni/results", "/run/netns"}, nil)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	failed := true
	defer func() {
		if leaks := c.teardown(host, o.keep || failed); leaks > 0 && err == nil {
			err = fmt.Errorf("runclet left %d objects after every pod was removed (listed above as LEAK)", leaks)
		}
		log.Printf("total %v", time.Since(t0).Round(time.Second))
	}()
	if c.nw, err = setupNetwork(o.nodes); err != nil {
		return err
	}
	// The host routes between the bridge and the nodes.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return err
	}

	reg, err := testregistry.StartOn(hostIP + ":0")
	if err != nil {
		return err
	}
	defer reg.Close()
	c.registry = reg.Host()
	ti := time.Now()
	if err := buildImages(reg, k8sBin, k8sSrc); err != nil {
		return err
	}
	log.Printf("test images built and served at %s in %v", reg.Host(), time.Since(ti).Round(time.Millisecond))

	tc := time.Now()
	if err := c.startControlPlane(ctx); err != nil {
		return err
	}
	log.Printf("control plane ready in %v", time.Since(tc).Round(time.Millisecond))
	if err := c.startDNS(ctx); err != nil {
		return err
	}
	tn := time.Now()
	for _, n := range c.nodes {
		if err := c.startNode(ctx, n); err != nil {
			return err
		}
	}
	if err := c.waitNodes(ctx); err != nil {
		return err
	}
	out, _ := c.kubectl(ctx, "", "get", "nodes", "-o", "wide")
	log.Printf("%d nodes Ready in %v after their start:\n%s", o.nodes, time.Since(tn).Round(time.Millisecond), out)
	if err := c.checkRuntimeVersion(ctx); err != nil {
		return err
	}
	if o.up {
		failed = false
		pidFile := filepath.Join(os.TempDir(), "runclet-cluster.pid")
		os.WriteFile(pidFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
		defer os.Remove(pidFile)
		fmt.Printf(`
The cluster is up (%d nodes, up in %v).
  export KUBECONFIG=%s
  %s get nodes -o wide
  %s create deployment web --image=%s/%s/agnhost:2.66.1 --replicas=4 -- /agnhost netexec
Images: the registry at %s serves %s/agnhost:2.66.1, busybox:1.37.0-2, nginx:1.27.0-2 (a stand-in) ...
Tear it down (everything it made on the host is removed): Ctrl-C here, or kill -TERM $(cat %s)
`, o.nodes, time.Since(t0).Round(time.Second), c.adminKubeconfig, c.bin("kubectl"), c.bin("kubectl"), c.registry, e2eRepo, c.registry, e2eRepo, pidFile)
		<-ctx.Done()
		log.Printf("tearing down")
		return nil
	}

	repoFile := c.path("repo-list.yaml")
	if err := os.WriteFile(repoFile, []byte(repoList(c.registry)), 0o644); err != nil {
		return err
	}
	res, err := c.runSuite(ctx, suiteOptions{focus: o.focus, skip: o.skip, procs: o.procs, repoList: repoFile})
	if err != nil {
		return err
	}
	ok := res.judge(expected, o.report)
	log.Printf("suite wall time: parallel %v, serial %v", res.parallelTook.Round(time.Second), res.serialTook.Round(time.Second))
	if !ok {
		return fmt.Errorf("results differ from %s (listed above)", o.expected)
	}
	failed = false
	return nil
}

// checkRuntimeVersion fails when a node shows its runtime without a
// version kubelet could parse (runclet://Unknown).
func (c *cluster) checkRuntimeVersion(ctx context.Context) error {
	out, err := c.kubectl(ctx, "", "get", "nodes", "-o", `jsonpath={range .items[*]}{.status.nodeInfo.containerRuntimeVersion}{"\n"}{end}`)
	if err != nil {
		return err
	}
	for _, v := range strings.Fields(out) {
		if !strings.HasPrefix(v, "runclet://") || strings.HasSuffix(v, "://Unknown") || v == "runclet://" {
			return fmt.Errorf("a node shows its container runtime as %q", v)
		}
	}
	return nil
}

// teardown stops everything and gives the host back. Logs are kept (the
// directory is moved aside) when keepLogs.
// It returns how many objects runclet left (printed as LEAK lines).
func (c *cluster) teardown(host *kube.HostState, keepLogs bool) (leaks int) {
	for _, n := range c.nodes {
		n.proxy.Stop(10 * time.Second)
		n.kubelet.Stop(20 * time.Second)
	}
	for _, n := range c.nodes {
		if n.rt != nil && !n.rt.Exited() {
			kube.RemoveSandboxes("unix://" + n.sock)
		}
		n.rt.Stop(30 * time.Second)
		if n.before != nil {
			for _, l := range n.before.Leaks(n.scope) {
				log.Printf("LEAK %s: %s", n.name, l)
				leaks++
			}
			n.scope.Pods.Close()
		}
		// What the CRI could not remove: runclet's own CLI removes it.
		if n.rt != nil {
			rcli := func(args ...string) *exec.Cmd {
				bin, a := n.inNetns(c.runclet, append([]string{"--config", filepath.Join(n.dir, "runclet.toml"),
					"--root", filepath.Join(n.dir, "root"), "--run-root", filepath.Join(n.dir, "run")}, args...)...)
				return exec.Command(bin, a...)
			}
			var pods []struct{ ID string }
			if out, err := rcli("list", "-o", "json").Output(); err == nil {
				json.Unmarshal(out, &pods)
			}
			for _, p := range pods {
				if b, err := rcli("rm", p.ID).CombinedOutput(); err != nil {
					log.Printf("%s: runclet rm %s: %v: %s", n.name, p.ID, err, b)
				}
			}
			if b, err := rcli("gc").CombinedOutput(); err != nil {
				log.Printf("%s: runclet gc: %v: %s", n.name, err, b)
			}
		}
	}
	c.coredns.Stop(10 * time.Second)
	c.scheduler.Stop(10 * time.Second)
	c.kcm.Stop(10 * time.Second)
	c.apiserver.Stop(20 * time.Second)
	c.etcd.Stop(20 * time.Second)
	kube.UnmountUnder(c.dir)
	for _, n := range c.nodes {
		if n.podLogsDir != "" {
			kube.RemoveLogSymlinks(n.podLogsDir)
		}
	}
	if c.nw != nil {
		c.nw.teardown()
	}
	host.Restore()
	if !keepLogs {
		if err := os.RemoveAll(c.dir); err != nil {
			log.Printf("removing %s: %v", c.dir, err)
		}
		return leaks
	}
	// The nodes' image stores and pod roots are large and say little.
	for _, n := range c.nodes {
		os.RemoveAll(filepath.Join(n.dir, "root"))
		os.RemoveAll(filepath.Join(n.dir, "kubelet"))
	}
	log.Printf("kept %s (daemon logs, reports)", c.dir)
	return leaks
}
