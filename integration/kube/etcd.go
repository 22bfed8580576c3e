package kube

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// StartEtcd starts a one-member etcd on 127.0.0.1 (client and peer ports
// given) with its data in dataDir and its log at logPath, and waits until
// it reports healthy. It returns the process and the client URL for
// kube-apiserver's --etcd-servers.
func StartEtcd(ctx context.Context, bin, name, dataDir, logPath string, clientPort, peerPort int, extra ...string) (*Proc, string, error) {
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	args := append([]string{"--name", name, "--data-dir", dataDir,
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", name + "=" + peerURL, "--initial-cluster-state", "new",
		"--log-level", "warn"}, extra...)
	p, err := StartProc("etcd", logPath, bin, args...)
	if err != nil {
		return nil, "", err
	}
	err = Poll(ctx, 30*time.Second, 100*time.Millisecond, "etcd health", func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("etcd exited: %v\n%s", p.Err, p.LogTail(20))
		}
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
	return p, clientURL, err
}
