package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/runclet/runclet/integration/kube"
	"github.com/runclet/runclet/integration/leakcheck"
)

// cluster is the control plane on the host and the nodes, everything
// under dir.
type cluster struct {
	dir        string
	k8sBin     string
	etcdBin    string
	corednsBin string
	runclet    string
	registry   string // host:port of the image registry
	cgroupRoot string // parent of every node's cgroup root

	pki     *kube.PKI
	nw      *network
	apiPort int
	apiURL  string

	adminKubeconfig string

	etcd, apiserver, kcm, scheduler, coredns *kube.Proc
	nodes                                    []*node
}

// node is one node's daemons and directories.
type node struct {
	nodeNet
	dir        string
	cgroupRoot string
	sock       string
	podLogsDir string
	kubeconfig string
	rt         *kube.Proc // runclet daemon
	kubelet    *kube.Proc
	proxy      *kube.Proc

	// What runclet left once kubelet and the CRI removed every pod is
	// counted against what existed before its daemon started.
	scope  leakcheck.Scope
	before leakcheck.Snapshot
}

func (c *cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

func (c *cluster) bin(name string) string { return filepath.Join(c.k8sBin, name) }

// writeKubeconfig writes a kubeconfig for the cluster with a bearer token.
func (c *cluster) writeKubeconfig(path, token string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: runclet
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: u
  user:
    token: %s
contexts:
- name: runclet
  context: {cluster: runclet, user: u, namespace: default}
current-context: runclet
`, c.apiURL, c.pki.CACert, token)
	return os.WriteFile(path, []byte(kc), 0o600)
}

// kubectl runs kubectl as the admin with stdin and returns its output.
func (c *cluster) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bin("kubectl"), append([]string{"--kubeconfig", c.adminKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// startControlPlane starts etcd, kube-apiserver (on the bridge address,
// Node and RBAC authorization, the default admission plugins plus
// NodeRestriction), kube-controller-manager and kube-scheduler, each with
// a token of its own identity, and waits for the apiserver to be ready.
func (c *cluster) startControlPlane(ctx context.Context) error {
	ports, err := kube.FreePorts(5)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer := ports[0], ports[1]
	c.apiPort = ports[2]
	kcmPort, schedPort := ports[3], ports[4]
	if c.pki, err = kube.NewPKI(c.path("pki"), ipList(hostIP, apiServerIP), nil); err != nil {
		return err
	}
	c.apiURL = fmt.Sprintf("https://%s:%d", hostIP, c.apiPort)
	c.adminKubeconfig = c.path("kubeconfig")
	if err := c.writeKubeconfig(c.adminKubeconfig, c.pki.Token); err != nil {
		return err
	}
	kcmToken, err := c.pki.AddToken("system:kube-controller-manager")
	if err != nil {
		return err
	}
	schedToken, err := c.pki.AddToken("system:kube-scheduler")
	if err != nil {
		return err
	}
	proxyToken, err := c.pki.AddToken("system:kube-proxy")
	if err != nil {
		return err
	}
	for _, kc := range []struct{ name, token string }{{"kcm", kcmToken}, {"scheduler", schedToken}, {"kube-proxy", proxyToken}} {
		if err := c.writeKubeconfig(c.path(kc.name+".kubeconfig"), kc.token); err != nil {
			return err
		}
	}
	for _, n := range c.nodes {
		tok, err := c.pki.AddToken("system:node:"+n.name, "system:nodes")
		if err != nil {
			return err
		}
		n.kubeconfig = filepath.Join(n.dir, "kubeconfig")
		if err := c.writeKubeconfig(n.kubeconfig, tok); err != nil {
			return err
		}
	}

	var etcdURL string
	if c.etcd, etcdURL, err = kube.StartEtcd(ctx, c.etcdBin, "conformance", c.path("etcd"), c.path("etcd.log"), etcdClient, etcdPeer, "--unsafe-no-fsync"); err != nil {
		return err
	}

	c.apiserver, err = kube.StartProc("kube-apiserver", c.path("kube-apiserver.log"), c.bin("kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", hostIP, "--advertise-address", hostIP,
		"--secure-port", strconv.Itoa(c.apiPort),
		"--cert-dir", c.path("apiserver-certs"),
		"--tls-cert-file", c.pki.ServerCert, "--tls-private-key-file", c.pki.ServerKey,
		"--client-ca-file", c.pki.CACert,
		"--token-auth-file", c.pki.TokenFile,
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", c.pki.SAPub,
		"--service-account-signing-key-file", c.pki.SAKey,
		"--service-cluster-ip-range", serviceCIDR,
		"--kubelet-client-certificate", c.pki.ClientCert, "--kubelet-client-key", c.pki.ClientKey,
		"--kubelet-preferred-address-types", "InternalIP,Hostname",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1")
	if err != nil {
		return err
	}
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	if err := kube.Poll(ctx, 120*time.Second, 250*time.Millisecond, "kube-apiserver /readyz", func() (bool, error) {
		if c.apiserver.Exited() {
			return false, fmt.Errorf("kube-apiserver exited: %v\n%s", c.apiserver.Err, c.apiserver.LogTail(30))
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", c.apiURL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.pki.Token)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("HTTP %d", resp.StatusCode)
	}); err != nil {
		return err
	}

	c.kcm, err = kube.StartProc("kube-controller-manager", c.path("kube-controller-manager.log"), c.bin("kube-controller-manager"),
		"--kubeconfig", c.path("kcm.kubeconfig"),
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(kcmPort),
		"--leader-elect=false",
		"--use-service-account-credentials",
		"--service-account-private-key-file", c.pki.SAKey,
		"--root-ca-file", c.pki.CACert,
		"--cluster-signing-cert-file", c.pki.CACert, "--cluster-signing-key-file", c.pki.CAKey,
		"--service-cluster-ip-range", serviceCIDR,
		"--cluster-cidr", clusterCIDR, "--allocate-node-cidrs=false",
		"--controllers", "*",
		"--profiling=false",
		"--v=1")
	if err != nil {
		return err
	}
	c.scheduler, err = kube.StartProc("kube-scheduler", c.path("kube-scheduler.log"), c.bin("kube-scheduler"),
		"--kubeconfig", c.path("scheduler.kubeconfig"),
		"--authentication-kubeconfig", c.path("scheduler.kubeconfig"),
		"--authorization-kubeconfig", c.path("scheduler.kubeconfig"),
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(schedPort),
		"--leader-elect=false",
		"--profiling=false",
		"--v=1")
	return err
}

func (c *cluster) httpClient() (*http.Client, error) {
	ca, err := os.ReadFile(c.pki.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// startDNS starts CoreDNS on the host's bridge address, serving
// cluster.local from the API, and makes it the kube-dns Service
// (10.242.0.10) through an EndpointSlice of its own: pods reach it through
// kube-proxy like any Service.
func (c *cluster) startDNS(ctx context.Context) error {
	corefile := fmt.Sprintf(`.:53 {
    bind %s
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s runclet
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    forward . /etc/resolv.conf
    cache 5
    loadbalance
}
`, hostIP, c.adminKubeconfig)
	if err := os.WriteFile(c.path("Corefile"), []byte(corefile), 0o644); err != nil {
		return err
	}
	var err error
	c.coredns, err = kube.StartProc("coredns", c.path("coredns.log"), c.corednsBin, "-conf", c.path("Corefile"))
	if err != nil {
		return err
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: %[1]s
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: runclet-conformance}
addressType: IPv4
endpoints:
- addresses: [%[2]s]
  conditions: {ready: true}
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
`, dnsIP, hostIP)
	if _, err := c.kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		return err
	}
	return nil
}

// startNode writes the node's runclet config (its own roots, socket, CNI
// bridge network on its pod CIDR, the registry as plain HTTP), kubelet's
// and kube-proxy's, and starts the three in the node's network namespace.
func (c *cluster) startNode(ctx context.Context, n *node) error {
	for _, d := range []string{"cni", "kubelet", "pod-logs", "ipam"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return err
		}
	}
	n.podLogsDir = filepath.Join(n.dir, "pod-logs")
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "%[1]s",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %[2]q, "ranges": [[{"subnet": %[3]q, "gateway": %[4]q}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, n.name, filepath.Join(n.dir, "ipam"), n.podNet, n.podGW)
	if err := os.WriteFile(filepath.Join(n.dir, "cni", "10-pods.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	n.sock = filepath.Join(n.dir, "runclet.sock")
	cfg := fmt.Sprintf("[network]\nconf_dir = %q\n\n[cri.runtime_handlers]\ntest-handler = \"runc\"\n\n[registries.%q]\ninsecure = true\n\n",
		filepath.Join(n.dir, "cni"), c.registry)
	for _, host := range []string{"registry.k8s.io", "docker.io", "gcr.io", "quay.io"} {
		cfg += fmt.Sprintf("[registries.%q]\nmirrors = [%q]\n", host, "http://"+c.registry)
	}
	// The images are the harness's own, served from its registry: the
	// trust policy accepts them unchecked (the default refuses unsigned).
	for _, prefix := range []string{c.registry, "registry.k8s.io", "docker.io", "gcr.io", "quay.io"} {
		cfg += fmt.Sprintf("[[trust.rules]]\nprefix = %q\naction = \"accept\"\n", prefix)
	}
	cfgPath := filepath.Join(n.dir, "runclet.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	root, runRoot := filepath.Join(n.dir, "root"), filepath.Join(n.dir, "run")
	pods, err := leakcheck.WatchPods(root)
	if err != nil {
		return err
	}
	n.scope = leakcheck.Scope{Root: root, RunRoot: runRoot, Pods: pods, PodCgroupParent: "/runclet",
		CgroupProcRoots: []string{n.cgroupRoot}, IPAMDirs: []string{filepath.Join(n.dir, "ipam", n.name)}}
	n.before = leakcheck.Take(n.scope)
	bin, args := n.inNetns(c.runclet, "--config", cfgPath, "--root", filepath.Join(n.dir, "root"), "--run-root", filepath.Join(n.dir, "run"),
		"daemon", "--listen", "unix://"+n.sock, "--log-level", "debug")
	if n.rt, err = kube.StartProc("runclet daemon "+n.name, filepath.Join(n.dir, "runclet.log"), bin, args...); err != nil {
		return err
	}
	if err := kube.WaitSocket(n.sock, n.rt, 60*time.Second); err != nil {
		return err
	}

	resolv := filepath.Join(n.dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+hostIP+"\n"), 0o644); err != nil {
		return err
	}
	kcfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
address: %s
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
podLogsDir: %q
failSwapOn: false
serializeImagePulls: false
protectKernelDefaults: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
nodeStatusUpdateFrequency: 5s
resolvConf: %q
clusterDomain: cluster.local
clusterDNS: [%s]
maxPods: 110
`, n.cgroupRoot, n.ip, c.pki.CACert, n.podLogsDir, resolv, dnsIP)
	kcfgPath := filepath.Join(n.dir, "kubelet-config.yaml")
	if err := os.WriteFile(kcfgPath, []byte(kcfg), 0o644); err != nil {
		return err
	}
	bin, args = n.inNetns(c.bin("kubelet"),
		"--config", kcfgPath,
		"--kubeconfig", n.kubeconfig,
		"--container-runtime-endpoint", "unix://"+n.sock,
		"--root-dir", filepath.Join(n.dir, "kubelet"),
		"--cert-dir", filepath.Join(n.dir, "kubelet-pki"),
		"--hostname-override", n.name,
		"--node-ip", n.ip,
		"--v=2")
	if n.kubelet, err = kube.StartProc("kubelet "+n.name, filepath.Join(n.dir, "kubelet.log"), bin, args...); err != nil {
		return err
	}

	pcfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection: {kubeconfig: %q}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, clusterCIDR, n.name, c.path("kube-proxy.kubeconfig"))
	pcfgPath := filepath.Join(n.dir, "kube-proxy.yaml")
	if err := os.WriteFile(pcfgPath, []byte(pcfg), 0o644); err != nil {
		return err
	}
	bin, args = n.inNetns(c.bin("kube-proxy"), "--config", pcfgPath, "--v=1")
	n.proxy, err = kube.StartProc("kube-proxy "+n.name, filepath.Join(n.dir, "kube-proxy.log"), bin, args...)
	return err
}

// waitNodes waits until every node is registered (then sets its pod CIDR,
// which no controller allocates here) and Ready.
func (c *cluster) waitNodes(ctx context.Context) error {
	cidrSet := map[string]bool{}
	return kube.Poll(ctx, 180*time.Second, 500*time.Millisecond, "nodes Ready", func() (bool, error) {
		for _, n := range c.nodes {
			for _, p := range []*kube.Proc{n.rt, n.kubelet, n.proxy} {
				if p.Exited() {
					return false, fmt.Errorf("%s exited: %v\n%s", p.Name, p.Err, p.LogTail(30))
				}
			}
		}
		out, err := c.kubectl(ctx, "", "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return false, err
		}
		ready := map[string]bool{}
		registered := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 1 {
				registered[f[0]] = true
			}
			if len(f) == 2 && f[1] == "True" {
				ready[f[0]] = true
			}
		}
		for _, n := range c.nodes {
			if registered[n.name] && !cidrSet[n.name] {
				patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, n.podNet, n.podNet)
				if _, err := c.kubectl(ctx, "", "patch", "node", n.name, "-p", patch); err != nil {
					return false, err
				}
				cidrSet[n.name] = true
			}
		}
		for _, n := range c.nodes {
			if !ready[n.name] {
				return false, fmt.Errorf("node %s not Ready yet", n.name)
			}
		}
		return true, nil
	})
}

// stopNodes stops each node's kube-proxy, kubelet and runtime.
func (c *cluster) stopNodes() {
	for _, n := range c.nodes {
		n.proxy.Stop(10 * time.Second)
		n.kubelet.Stop(20 * time.Second)
	}
}

func ipList(s ...string) (ips []net.IP) {
	for _, x := range s {
		ips = append(ips, net.ParseIP(x))
	}
	return ips
}

func logf(format string, args ...any) { log.Printf(format, args...) }
