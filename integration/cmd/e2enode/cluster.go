package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/runclet/runclet/integration/kube"
)

// nodeName is the node's name and its InternalIP: kubelet registers with
// --hostname-override=127.0.0.1 and no --node-ip (which kubelet refuses to
// be a loopback address; an IP as hostname override is taken as is), so
// kube-apiserver reaches it on loopback.
const nodeName = "127.0.0.1"

// Kubelet log rotation settings, small so the rotation scenario sees
// several rotations in seconds.
const (
	containerLogMaxSize  = "64Ki"
	containerLogMaxFiles = 4
)

// cluster is the one-node cluster: etcd, kube-apiserver and kubelet on
// loopback, everything under dir.
type cluster struct {
	dir        string
	k8sBin     string
	etcdBin    string
	pki        *kube.PKI
	rt         criRuntime
	cgroupRoot string

	etcd, apiserver, kubelet *kube.Proc

	api            *apiClient
	kubeconfig     string
	apiPort        int
	kubeletPort    int
	kubeletROPort  int
	kubeletRootDir string
	staticPodDir   string
	podLogsDir     string
	hostPathDir    string // scratch directory pods mount with hostPath
	kubeletUp      time.Duration
}

func (c *cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

func (c *cluster) kubectlPath() string { return filepath.Join(c.k8sBin, "kubectl") }

// startControlPlane starts etcd and kube-apiserver and waits until the
// apiserver is ready.
func (c *cluster) startControlPlane(ctx context.Context) error {
	ports, err := kube.FreePorts(5)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer := ports[0], ports[1]
	c.apiPort, c.kubeletPort, c.kubeletROPort = ports[2], ports[3], ports[4]
	if c.pki, err = kube.NewPKI(c.path("pki"), nil, nil); err != nil {
		return err
	}
	var etcdURL string
	if c.etcd, etcdURL, err = kube.StartEtcd(ctx, c.etcdBin, "e2enode", c.path("etcd"), c.path("etcd.log"), etcdClient, etcdPeer); err != nil {
		return err
	}

	issuer := "https://kubernetes.default.svc.cluster.local"
	c.apiserver, err = kube.StartProc("kube-apiserver", c.path("kube-apiserver.log"), filepath.Join(c.k8sBin, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(c.apiPort),
		"--cert-dir", c.path("apiserver-certs"),
		"--tls-cert-file", c.pki.ServerCert, "--tls-private-key-file", c.pki.ServerKey,
		"--client-ca-file", c.pki.CACert,
		"--token-auth-file", c.pki.TokenFile,
		"--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", issuer,
		"--service-account-key-file", c.pki.SAPub,
		"--service-account-signing-key-file", c.pki.SAKey,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--endpoint-reconciler-type", "none",
		"--kubelet-client-certificate", c.pki.ClientCert, "--kubelet-client-key", c.pki.ClientKey,
		"--kubelet-preferred-address-types", "InternalIP,Hostname",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1")
	if err != nil {
		return err
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", c.apiPort)
	if c.api, err = newAPIClient(base, c.pki.CACert, c.pki.Token); err != nil {
		return err
	}
	if err := kube.Poll(ctx, 90*time.Second, 200*time.Millisecond, "kube-apiserver /readyz", func() (bool, error) {
		if c.apiserver.Exited() {
			return false, fmt.Errorf("kube-apiserver exited: %v\n%s", c.apiserver.Err, c.apiserver.LogTail(30))
		}
		_, err := c.api.do(ctx, "GET", "/readyz", "", nil)
		return err == nil, err
	}); err != nil {
		return err
	}
	c.kubeconfig = c.path("kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2enode
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: e2enode
  context: {cluster: e2enode, user: admin, namespace: default}
current-context: e2enode
`, base, c.pki.CACert, c.pki.Token)
	return os.WriteFile(c.kubeconfig, []byte(kc), 0o600)
}

// bootstrap creates what a controller-manager would: the default
// ServiceAccount and the kube-root-ca.crt ConfigMap of the default
// namespace, and the RuntimeClasses for runclet's handlers.
func (c *cluster) bootstrap(ctx context.Context) error {
	if err := kube.Poll(ctx, 30*time.Second, 200*time.Millisecond, "namespace default", func() (bool, error) {
		var ns struct{}
		err := c.api.get(ctx, "/api/v1/namespaces/default", &ns)
		return err == nil, err
	}); err != nil {
		return err
	}
	ca, err := os.ReadFile(c.pki.CACert)
	if err != nil {
		return err
	}
	objs := []struct{ path, manifest string }{
		{"/api/v1/namespaces/default/serviceaccounts", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default}\n"},
		{"/api/v1/namespaces/default/configmaps", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-root-ca.crt}\ndata:\n  ca.crt: |\n" + indent(string(ca), "    ")},
		{"/apis/node.k8s.io/v1/runtimeclasses", "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: runclet-fly}\nhandler: fly\n"},
		{"/apis/node.k8s.io/v1/runtimeclasses", "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: runclet-runc}\nhandler: runc\n"},
	}
	for _, o := range objs {
		if err := c.api.create(ctx, o.path, o.manifest); err != nil {
			return fmt.Errorf("creating %s: %w", o.path, err)
		}
	}
	return nil
}

// startKubelet writes kubelet's configuration and starts it against the
// runtime, then waits for the node to be Ready. The time from start to
// Ready is kept in kubeletUp.
func (c *cluster) startKubelet(ctx context.Context) error {
	c.kubeletRootDir = c.path("kubelet")
	c.staticPodDir = c.path("static-pods")
	c.podLogsDir = c.path("pod-logs")
	c.hostPathDir = c.path("hostpath")
	for _, d := range []string{c.kubeletRootDir, c.staticPodDir, c.podLogsDir, c.hostPathDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
address: 127.0.0.1
port: %d
readOnlyPort: %d
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
staticPodPath: %q
fileCheckFrequency: 1s
podLogsDir: %q
containerLogMaxSize: %s
containerLogMaxFiles: %d
containerLogMonitorInterval: 3s
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
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 10s
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
`, c.cgroupRoot, c.kubeletPort, c.kubeletROPort, c.pki.CACert, c.staticPodDir, c.podLogsDir,
		containerLogMaxSize, containerLogMaxFiles)
	cfgPath := c.path("kubelet-config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	t0 := time.Now()
	var err error
	c.kubelet, err = kube.StartProc("kubelet", c.path("kubelet.log"), filepath.Join(c.k8sBin, "kubelet"),
		"--config", cfgPath,
		"--kubeconfig", c.kubeconfig,
		"--container-runtime-endpoint", c.rt.endpoint(),
		"--image-service-endpoint", c.rt.endpoint(),
		"--root-dir", c.kubeletRootDir,
		"--cert-dir", c.path("kubelet-pki"),
		"--hostname-override", nodeName,
		"--v=2")
	if err != nil {
		return err
	}
	var lastReason string
	err = kube.Poll(ctx, 120*time.Second, 100*time.Millisecond, "node Ready", func() (bool, error) {
		if c.kubelet.Exited() {
			return false, fmt.Errorf("kubelet exited: %v\n%s", c.kubelet.Err, c.kubelet.LogTail(40))
		}
		var n node
		if err := c.api.get(ctx, "/api/v1/nodes/"+nodeName, &n); err != nil {
			return false, err
		}
		ok, reason := n.ready()
		lastReason = reason
		return ok, fmt.Errorf("%s", reason)
	})
	if err != nil {
		return fmt.Errorf("%w (last: %s; kubelet log %s)", err, lastReason, c.kubelet.LogPath)
	}
	c.kubeletUp = time.Since(t0)
	return nil
}

// kubeletMetrics returns kubelet's /metrics text from its read-only port.
func (c *cluster) kubeletMetrics(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", c.kubeletROPort), nil)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("kubelet /metrics: HTTP %d", resp.StatusCode)
	}
	return b.String(), nil
}

// deleteAllPods deletes every pod in the default namespace (grace 0) and
// every static pod manifest, then waits until kubelet has removed their
// sandboxes from the runtime view (the pods are gone from the API and no
// pod is running on the node).
func (c *cluster) deleteAllPods(ctx context.Context) {
	ents, _ := os.ReadDir(c.staticPodDir)
	for _, e := range ents {
		os.Remove(filepath.Join(c.staticPodDir, e.Name()))
	}
	var list struct{ Items []pod }
	if err := c.api.get(ctx, "/api/v1/namespaces/default/pods", &list); err != nil {
		return
	}
	for _, p := range list.Items {
		c.api.delete(ctx, "/api/v1/namespaces/default/pods/"+p.Metadata.Name, 0)
	}
	kube.Poll(ctx, 60*time.Second, 500*time.Millisecond, "pods deleted", func() (bool, error) {
		var list struct{ Items []pod }
		if err := c.api.get(ctx, "/api/v1/namespaces/default/pods", &list); err != nil {
			return false, err
		}
		return len(list.Items) == 0, nil
	})
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
