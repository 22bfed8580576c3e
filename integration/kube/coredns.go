package kube

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// CoreDNSVersion is the CoreDNS release built as the cluster DNS.
const CoreDNSVersion = "v1.15.0"

// corednsMain is a CoreDNS with only the plugins a cluster DNS needs (the
// way CoreDNS documents building with a chosen plugin set: import coremain
// and the plugins, and order them in dnsserver.Directives). Leaving out the
// cloud and storage plugins keeps the build a few minutes shorter.
const corednsMain = `// Command coredns is CoreDNS with a cluster DNS's plugins only.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{"reload", "bind", "ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes", "loop", "forward"}
}

func main() { coremain.Run() }
`

// CoreDNS returns the coredns binary given, else one built from
// github.com/coredns/coredns@CoreDNSVersion in a scratch module and cached
// under os.UserCacheDir()/runclet-k8s/coredns-<version>.
func CoreDNS(given string) (string, error) {
	if given != "" {
		return filepath.Abs(given)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "runclet-k8s", "coredns-"+CoreDNSVersion)
	bin := filepath.Join(dir, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	goCmd, err := FindGo()
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "runclet-coredns-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "main.go"), []byte(corednsMain), 0o644); err != nil {
		return "", err
	}
	gomod := fmt.Sprintf("module runclet.conformance/coredns\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n", CoreDNSVersion)
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte(gomod), 0o644); err != nil {
		return "", err
	}
	log.Printf("building CoreDNS %s (once; cached in %s)", CoreDNSVersion, dir)
	t0 := time.Now()
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-trimpath", "-ldflags", "-s -w", "-o", "coredns", "."}} {
		c := exec.Command(goCmd, args...)
		c.Dir, c.Env, c.Stdout, c.Stderr = tmp, env, os.Stderr, os.Stderr
		if err := c.Run(); err != nil {
			return "", fmt.Errorf("go %v (CoreDNS): %w", args, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(tmp, "coredns"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(bin+".tmp", data, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		return "", err
	}
	log.Printf("built CoreDNS in %v", time.Since(t0).Round(time.Second))
	return bin, nil
}
