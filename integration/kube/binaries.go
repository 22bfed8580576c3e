package kube

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// Version is the Kubernetes release whose kubelet, kube-apiserver and
// kubectl are built and cached.
const Version = "v1.37.2"

// Tool is a program built from k8s.io/kubernetes (or a module it
// requires) at Version: a command, or with Test a package's test binary
// (go test -c).
type Tool struct {
	Name string // the binary's name in the cache
	Pkg  string // its import path
	Test bool
}

// The tools the harnesses build.
var (
	Kubelet               = Tool{Name: "kubelet", Pkg: "k8s.io/kubernetes/cmd/kubelet"}
	KubeAPIServer         = Tool{Name: "kube-apiserver", Pkg: "k8s.io/kubernetes/cmd/kube-apiserver"}
	Kubectl               = Tool{Name: "kubectl", Pkg: "k8s.io/kubernetes/cmd/kubectl"}
	KubeControllerManager = Tool{Name: "kube-controller-manager", Pkg: "k8s.io/kubernetes/cmd/kube-controller-manager"}
	KubeScheduler         = Tool{Name: "kube-scheduler", Pkg: "k8s.io/kubernetes/cmd/kube-scheduler"}
	KubeProxy             = Tool{Name: "kube-proxy", Pkg: "k8s.io/kubernetes/cmd/kube-proxy"}
	Agnhost               = Tool{Name: "agnhost", Pkg: "k8s.io/kubernetes/test/images/agnhost"}
	Nnp                   = Tool{Name: "nnp", Pkg: "k8s.io/kubernetes/test/images/nonewprivs"}
	Ginkgo                = Tool{Name: "ginkgo", Pkg: "github.com/onsi/ginkgo/v2/ginkgo"}
	E2ETest               = Tool{Name: "e2e.test", Pkg: "k8s.io/kubernetes/test/e2e", Test: true}
)

// Binaries returns the directory holding the tools: dir when given (they
// must be there), else os.UserCacheDir()/runclet-k8s/<version>, building
// what is missing there first.
func Binaries(dir string, tools ...Tool) (string, error) {
	if dir != "" {
		for _, t := range tools {
			if _, err := os.Stat(filepath.Join(dir, t.Name)); err != nil {
				return "", fmt.Errorf("-k8s-bin: %w", err)
			}
		}
		return filepath.Abs(dir)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "runclet-k8s", Version)
	// The stamp records how the cached binaries were built; binaries
	// built another way (or half-built) are built again.
	stamp := filepath.Join(out, "build-stamp")
	want := strings.Join(k8sLdflags(), " ") + "\n"
	var missing []Tool
	if b, err := os.ReadFile(stamp); err != nil || string(b) != want {
		missing = tools
		os.Remove(stamp)
	} else {
		for _, t := range tools {
			if _, err := os.Stat(filepath.Join(out, t.Name)); err != nil {
				missing = append(missing, t)
			}
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	var names []string
	for _, t := range missing {
		names = append(names, t.Name)
	}
	t0 := time.Now()
	log.Printf("building %s of Kubernetes %s (once; kubelet, kube-apiserver and kubectl take about 12 minutes on an idle 2-core machine, e2e.test as long again; cached in %s)",
		strings.Join(names, ", "), Version, out)
	if err := buildK8s(out, missing); err != nil {
		return "", err
	}
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		return "", err
	}
	log.Printf("built %s in %v", strings.Join(names, ", "), time.Since(t0).Round(time.Second))
	return out, nil
}

// buildK8s builds tools of k8s.io/kubernetes into out from a scratch module
// outside this repository. kubernetes' go.mod requires its staging modules
// (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and replaces them with
// ./staging directories, which a dependent module does not get: the scratch
// module replaces each with the published module of the same minor release.
func buildK8s(out string, tools []Tool) error {
	tmp, err := os.MkdirTemp("", "runclet-k8s-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	goCmd, err := FindGo()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	dl := exec.Command(goCmd, "mod", "download", "-json", "k8s.io/kubernetes@"+Version)
	dl.Dir, dl.Env, dl.Stderr = tmp, env, os.Stderr
	js, err := dl.Output()
	if err != nil {
		return fmt.Errorf("go mod download k8s.io/kubernetes@%s: %w", Version, err)
	}
	var mod struct{ GoMod string }
	if err := json.Unmarshal(js, &mod); err != nil || mod.GoMod == "" {
		return fmt.Errorf("go mod download k8s.io/kubernetes: no GoMod in %s", js)
	}
	staging, err := stagingModules(mod.GoMod)
	if err != nil {
		return err
	}
	if len(staging) == 0 {
		return fmt.Errorf("no v0.0.0 staging requirements found in %s", mod.GoMod)
	}
	stagingVersion := "v0." + strings.TrimPrefix(Version, "v1.")
	var gomod strings.Builder
	fmt.Fprintf(&gomod, "module runclet.e2enode/k8sbuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", Version)
	for _, m := range staging {
		fmt.Fprintf(&gomod, "\t%s => %s %s\n", m, m, stagingVersion)
	}
	gomod.WriteString(")\n")
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte(gomod.String()), 0o644); err != nil {
		return err
	}
	bin := filepath.Join(tmp, "bin")
	ldflags := strings.Join(k8sLdflags(), " ")
	var cmds, tests []Tool
	for _, t := range tools {
		if t.Test {
			tests = append(tests, t)
		} else {
			cmds = append(cmds, t)
		}
	}
	var runs [][]string
	if len(cmds) > 0 {
		args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", bin + "/"}
		for _, t := range cmds {
			args = append(args, t.Pkg)
		}
		runs = append(runs, args)
	}
	for _, t := range tests {
		runs = append(runs, []string{"test", "-c", "-vet=off", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(bin, t.Name), t.Pkg})
	}
	for _, args := range runs {
		b := exec.Command(goCmd, args...)
		b.Dir, b.Env, b.Stdout, b.Stderr = tmp, env, os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
	}
	for _, t := range tools {
		// Copy then rename, so a cached binary is always whole.
		data, err := os.ReadFile(filepath.Join(bin, t.Name))
		if err != nil {
			return err
		}
		dst := filepath.Join(out, t.Name)
		if err := os.WriteFile(dst+".tmp", data, 0o755); err != nil {
			return err
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			return err
		}
	}
	return nil
}

// FindGo returns the go command: from PATH, else $GOROOT/bin or the Go
// this program was built with.
func FindGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, root := range []string{os.Getenv("GOROOT"), runtime.GOROOT(), "/usr/local/go"} {
		if p := filepath.Join(root, "bin", "go"); root != "" {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("building Kubernetes needs the go command: not in PATH, $GOROOT/bin or /usr/local/go/bin")
}

// k8sLdflags stamp the version into the binaries as Kubernetes' own
// build does (hack/lib/version.sh), so kubelet registers as v1.37.2 and
// kubectl version tells the truth.
func k8sLdflags() []string {
	minor := strings.SplitN(strings.TrimPrefix(Version, "v"), ".", 3)[1]
	var flags []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+Version,
			"-X", pkg+".gitMajor=1",
			"-X", pkg+".gitMinor="+minor,
			"-X", pkg+".gitTreeState=clean")
	}
	return append(flags, "-s", "-w")
}

var stagingRequire = regexp.MustCompile(`^\s*(k8s\.io/[A-Za-z0-9._/-]+)\s+v0\.0\.0\s*(//.*)?$`)

// stagingModules lists the modules a kubernetes go.mod requires at v0.0.0.
func stagingModules(gomod string) ([]string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mods []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "=>") {
			continue
		}
		if m := stagingRequire.FindStringSubmatch(strings.TrimPrefix(strings.TrimSpace(line), "require ")); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			mods = append(mods, m[1])
		}
	}
	return mods, sc.Err()
}

// Etcd returns Debian's etcd (package etcd-server), fetched with
// apt-get download and unpacked under os.UserCacheDir()/runclet-k8s/etcd
// the first time; an etcd given with -etcd wins.
func Etcd(given string) (string, error) {
	if given != "" {
		return filepath.Abs(given)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "runclet-k8s", "etcd")
	bin := filepath.Join(dir, "usr", "bin", "etcd")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	tmp, err := os.MkdirTemp("", "runclet-etcd-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	dl := func() ([]byte, error) {
		c := exec.Command("apt-get", "download", "etcd-server")
		c.Dir = tmp
		return c.CombinedOutput()
	}
	log.Printf("fetching Debian's etcd-server with apt-get download (once; cached in %s)", dir)
	if out, err := dl(); err != nil {
		log.Printf("apt-get download etcd-server: %v: %s; running apt-get update and retrying", err, strings.TrimSpace(string(out)))
		if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %w: %s", err, out)
		}
		if out, err := dl(); err != nil {
			return "", fmt.Errorf("apt-get download etcd-server: %w: %s", err, out)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "etcd-server_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download etcd-server: expected one .deb in %s, found %v", tmp, debs)
	}
	stage := dir + ".tmp"
	os.RemoveAll(stage)
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], stage).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", debs[0], err, out)
	}
	os.RemoveAll(dir)
	if err := os.Rename(stage, dir); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("etcd-server package has no usr/bin/etcd: %w", err)
	}
	return bin, nil
}

// SourceDir returns the directory of k8s.io/kubernetes@Version in the Go
// module cache (downloading it if needed), for the files of test/images.
func SourceDir() (string, error) {
	goCmd, err := FindGo()
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "runclet-k8s-src-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	dl := exec.Command(goCmd, "mod", "download", "-json", "k8s.io/kubernetes@"+Version)
	dl.Dir, dl.Env, dl.Stderr = tmp, append(os.Environ(), "GOFLAGS=-mod=mod"), os.Stderr
	js, err := dl.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download k8s.io/kubernetes@%s: %w", Version, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(js, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download k8s.io/kubernetes: no Dir in %s", js)
	}
	return mod.Dir, nil
}
