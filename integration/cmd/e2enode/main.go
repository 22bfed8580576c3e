// Command e2enode runs a real kubelet on runclet: a one-node Kubernetes
// cluster (etcd, kube-apiserver and kubelet of Kubernetes v1.37.2, no
// scheduler or controller-manager) on loopback, whose kubelet talks CRI to
// a private `runclet daemon`, and a set of scenarios driven through the
// API and kubectl: init containers and emptyDir, logs, exec, attach,
// port-forward, probes, restart policies, resources and OOM, host
// namespaces, RuntimeClass, graceful deletion, log rotation and a runtime
// daemon restart. It prints one PASS/FAIL/SKIP line per scenario, the time
// the node took to become Ready and kubelet's pod start and runtime
// operation latencies, and exits non-zero if any scenario failed.
//
//	go run ./integration/cmd/e2enode -runclet bin/runclet      # make e2e-node
//	go run ./integration/cmd/e2enode -containerd               # the same on Debian's containerd
//
// It needs root. kubelet, kube-apiserver and kubectl are built once from
// k8s.io/kubernetes in a scratch module and cached under
// os.UserCacheDir()/runclet-k8s/<version>; etcd is Debian's etcd-server,
// fetched with apt-get download and unpacked into the same cache. Test
// images are built from integration/testimage and served by an in-process
// registry that registry.k8s.io, docker.io, gcr.io and quay.io are
// mirrored to. Pods use bridge rcle2e0 on 10.217.0.0/24. Everything else
// lives in a temporary directory; at the end every daemon is stopped by
// PID and the host is given back: sysctls kubelet changed, the private
// cgroup root in every hierarchy, mounts, the bridge, directories made
// outside the temporary one and kubelet's /var/log/containers symlinks.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/runclet/runclet/integration/kube"
	"github.com/runclet/runclet/integration/leakcheck"
	"github.com/runclet/runclet/integration/testregistry"
)

type options struct {
	runclet    string
	containerd bool
	k8sBin     string
	etcd       string
	run        string
	parallel   int
	keep       bool
	timeout    time.Duration
	buildOnly  bool
}

func main() {
	var o options
	flag.StringVar(&o.runclet, "runclet", "bin/runclet", "runclet binary (stage1-runc next to it)")
	flag.BoolVar(&o.containerd, "containerd", false, "run the scenarios on a private instance of Debian's containerd (/usr/bin/containerd) instead of runclet")
	flag.StringVar(&o.k8sBin, "k8s-bin", "", "directory with kubelet, kube-apiserver and kubectl (default: build and cache Kubernetes "+kube.Version+"'s)")
	flag.StringVar(&o.etcd, "etcd", "", "etcd binary (default: Debian's etcd-server, fetched with apt-get download and cached)")
	flag.StringVar(&o.run, "run", "", "run only the scenarios whose name matches this regexp")
	flag.IntVar(&o.parallel, "parallel", 8, "scenarios run at the same time")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs of every daemon)")
	flag.DurationVar(&o.timeout, "timeout", 40*time.Minute, "bound on the whole run")
	flag.BoolVar(&o.buildOnly, "build-only", false, "build (or find cached) kubelet, kube-apiserver, kubectl and etcd, print where, and exit")
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("e2enode: ")
	if o.buildOnly {
		dir, err := kube.Binaries(o.k8sBin, kube.Kubelet, kube.KubeAPIServer, kube.Kubectl)
		if err == nil {
			var etcd string
			etcd, err = kube.Etcd(o.etcd)
			log.Printf("kubelet, kube-apiserver and kubectl in %s; etcd %s", dir, etcd)
		}
		if err != nil {
			log.Fatal(err)
		}
		return
	}
	failed, err := run(o)
	if err != nil {
		log.Print(err)
		os.Exit(2)
	}
	if failed > 0 {
		log.Printf("%d scenarios failed", failed)
		os.Exit(1)
	}
}

func run(o options) (failed int, err error) {
	if os.Geteuid() != 0 {
		return 0, fmt.Errorf("must run as root")
	}
	var filter *regexp.Regexp
	if o.run != "" {
		if filter, err = regexp.Compile(o.run); err != nil {
			return 0, fmt.Errorf("-run: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	t0 := time.Now()

	// The slow part first: the Kubernetes binaries build (about 12 minutes
	// cold) while etcd is fetched and the images are built.
	type binResult struct {
		dir string
		err error
	}
	binCh := make(chan binResult, 1)
	go func() {
		d, err := kube.Binaries(o.k8sBin, kube.Kubelet, kube.KubeAPIServer, kube.Kubectl)
		binCh <- binResult{d, err}
	}()
	etcdBin, err := kube.Etcd(o.etcd)
	if err != nil {
		return 0, err
	}
	var runclet string
	if !o.containerd {
		if runclet, err = filepath.Abs(o.runclet); err != nil {
			return 0, err
		}
		if _, err := os.Stat(runclet); err != nil {
			return 0, fmt.Errorf("runclet binary: %w (run make build)", err)
		}
	}

	reg, err := testregistry.Start()
	if err != nil {
		return 0, err
	}
	defer reg.Close()
	ti := time.Now()
	if err := pushImages(reg); err != nil {
		return 0, err
	}
	log.Printf("test images built and served at %s in %v", reg.URL(), time.Since(ti).Round(time.Millisecond))

	dir, err := os.MkdirTemp("", "runclet-e2enode-")
	if err != nil {
		return 0, err
	}
	c := &cluster{dir: dir, etcdBin: etcdBin, cgroupRoot: "/" + filepath.Base(dir)}
	if o.containerd {
		c.rt, err = newContainerdRuntime(c.path("containerd"), reg.URL())
	} else {
		c.rt, err = newRuncletRuntime(runclet, c.path("runclet"), reg.URL())
	}
	if err != nil {
		return 0, err
	}

	br := <-binCh
	if br.err != nil {
		return 0, br.err
	}
	c.k8sBin = br.dir
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}

	host, err := kube.SaveHost([]string{c.cgroupRoot}, append([]string{"/var/log/containers"}, c.rt.hostDirs()...), []string{bridgeName})
	if err != nil {
		return 0, err
	}
	// What runclet leaves after kubelet and the CRI removed every pod is
	// counted before anything is cleaned up by hand.
	census := func() []string { return nil }
	if r, ok := c.rt.(*runcletRuntime); ok {
		scope, err := r.leakScope(c.cgroupRoot)
		if err != nil {
			host.Restore()
			return 0, err
		}
		defer scope.Pods.Close()
		before := leakcheck.Take(scope)
		census = func() []string { return before.Leaks(scope) }
	}
	defer func() {
		leaks := teardown(c, host, o.keep, failed > 0 || err != nil, census)
		if len(leaks) > 0 && err == nil {
			err = fmt.Errorf("runclet left %d objects after every pod was removed (listed above as LEAK)", len(leaks))
		}
		log.Printf("total %v", time.Since(t0).Round(time.Second))
	}()

	if err := c.rt.start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", c.rt.name(), err)
	}
	tc := time.Now()
	if err := c.startControlPlane(ctx); err != nil {
		return 0, err
	}
	if err := c.bootstrap(ctx); err != nil {
		return 0, err
	}
	log.Printf("etcd and kube-apiserver ready in %v", time.Since(tc).Round(time.Millisecond))
	if err := c.startKubelet(ctx); err != nil {
		return 0, err
	}
	var n node
	c.api.get(ctx, "/api/v1/nodes/"+nodeName, &n)
	log.Printf("node %s Ready %v after kubelet start (kubelet %s, runtime %s)", nodeName,
		c.kubeletUp.Round(time.Millisecond), n.Status.NodeInfo.KubeletVersion, n.Status.NodeInfo.ContainerRuntimeVersion)

	results := runScenarios(ctx, c, filter, o.parallel)

	fmt.Printf("\n=== e2e-node on %s: node Ready in %v after kubelet start\n", c.rt.name(), c.kubeletUp.Round(time.Millisecond))
	for _, r := range results {
		fmt.Println(r.line())
		if r.status == "FAIL" {
			failed++
		}
	}
	if m, err := c.kubeletMetrics(ctx); err == nil {
		fmt.Print(summarizeMetrics(m))
	} else {
		log.Printf("kubelet metrics: %v", err)
	}
	return failed, nil
}

// teardown deletes the pods through kubelet, stops kubelet, removes the
// sandboxes kubelet left through the CRI, stops the runtime, counts what
// it left (census), stops kube-apiserver and etcd (each by its PID),
// removes what the runtime left, and restores the host. The daemons' logs
// are kept when keepLogs (a failure) or keep (everything). It returns the
// leaks counted.
func teardown(c *cluster, host *kube.HostState, keep, keepLogs bool, census func() []string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if c.kubelet != nil && !c.kubelet.Exited() && c.api != nil {
		c.deleteAllPods(ctx)
	}
	c.kubelet.Stop(20 * time.Second)
	if c.rt.running() {
		kube.RemoveSandboxes(c.rt.endpoint())
	}
	c.rt.stopDaemon()
	leaks := census()
	for _, l := range leaks {
		log.Printf("LEAK %s", l)
	}
	keepLogs = keepLogs || len(leaks) > 0
	c.rt.cleanup()
	c.apiserver.Stop(20 * time.Second)
	c.etcd.Stop(20 * time.Second)
	kube.UnmountUnder(c.dir)
	if c.podLogsDir != "" {
		kube.RemoveLogSymlinks(c.podLogsDir)
	}
	host.Restore()
	if keep {
		log.Printf("kept %s", c.dir)
		return leaks
	}
	if !keepLogs {
		if err := os.RemoveAll(c.dir); err != nil {
			log.Printf("removing %s: %v", c.dir, err)
		}
		return leaks
	}
	// Keep the daemons' logs; drop the rest.
	logs := filepath.Join(os.TempDir(), filepath.Base(c.dir)+"-logs")
	os.MkdirAll(logs, 0o755)
	for _, p := range []string{"etcd.log", "kube-apiserver.log", "kubelet.log"} {
		os.Rename(c.path(p), filepath.Join(logs, p))
	}
	os.Rename(c.rt.logPath(), filepath.Join(logs, filepath.Base(c.rt.logPath())))
	if err := os.RemoveAll(c.dir); err != nil {
		log.Printf("removing %s: %v", c.dir, err)
	}
	log.Printf("daemon logs in %s", logs)
	return leaks
}

// result is one scenario's outcome.
type result struct {
	name   string
	status string // PASS, FAIL, SKIP
	took   time.Duration
	msg    string
	notes  []string
}

func (r result) line() string {
	s := fmt.Sprintf("%-4s %-24s %6.1fs", r.status, r.name, r.took.Seconds())
	if r.msg != "" {
		s += "  " + r.msg
	}
	for _, n := range r.notes {
		s += "\n       " + n
	}
	return s
}

// runScenarios runs the parallel scenarios at most parallel at a time,
// then the serial ones one by one, in the order of the scenarios list.
func runScenarios(ctx context.Context, c *cluster, filter *regexp.Regexp, parallel int) []result {
	all := scenarios()
	results := make([]result, len(all))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	runOne := func(i int) {
		s := all[i]
		t := &T{ctx: ctx, c: c, name: s.name}
		r := result{name: s.name}
		t0 := time.Now()
		switch {
		case ctx.Err() != nil:
			// A scenario that did not run proves nothing: it fails the run.
			r.status, r.msg = "FAIL", "did not run: interrupted: "+ctx.Err().Error()
		case s.runcletOnly != "" && c.rt.name() != "runclet":
			r.status, r.msg = "SKIP", s.runcletOnly
		default:
			log.Printf("start %s", s.name)
			sctx, cancel := context.WithTimeout(ctx, s.timeout())
			t.ctx = sctx
			err := s.run(t)
			t.cleanup()
			cancel()
			if err != nil {
				r.status, r.msg = "FAIL", err.Error()
			} else {
				r.status = "PASS"
			}
			r.notes = t.notes
		}
		r.took = time.Since(t0)
		log.Printf("%s %s (%v)", r.status, s.name, r.took.Round(100*time.Millisecond))
		results[i] = r
	}
	for i, s := range all {
		if filter != nil && !filter.MatchString(s.name) {
			results[i] = result{name: s.name, status: "SKIP", msg: "not selected by -run"}
			continue
		}
		if s.serial {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			runOne(i)
		}()
	}
	wg.Wait()
	// The serial scenarios measure: let kubelet finish with the pods of
	// the parallel ones first.
	kube.Poll(ctx, 60*time.Second, 500*time.Millisecond, "pods of the parallel scenarios gone", func() (bool, error) {
		var list struct{ Items []pod }
		err := c.api.get(ctx, podsPath, &list)
		return err == nil && len(list.Items) == 0, err
	})
	for i, s := range all {
		if s.serial && (filter == nil || filter.MatchString(s.name)) {
			runOne(i)
		}
	}
	var out []result
	for _, r := range results {
		if r.status == "SKIP" && strings.HasPrefix(r.msg, "not selected") {
			continue
		}
		out = append(out, r)
	}
	return out
}
