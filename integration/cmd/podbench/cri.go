package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// crictlVersion is the cri-tools release built when -crictl is not given.
const crictlVersion = "v1.37.0"

// pollInterval is how often an app's state is asked for while waiting for
// its exit, from either tool.
const pollInterval = 50 * time.Millisecond

// setupCRIClient builds crictl (unless given) and points it at our
// containerd only: endpoints and a config file of our own, so no
// /etc/crictl.yaml is read.
func (b *bench) setupCRIClient(ctx context.Context, bin string) error {
	if bin == "" {
		gobin := filepath.Join(b.dir, "gobin")
		fmt.Fprintf(os.Stderr, "building crictl %s\n", crictlVersion)
		env := append(os.Environ(), "GOBIN="+gobin)
		if _, err := output(ctx, env, "go", "install", "sigs.k8s.io/cri-tools/cmd/crictl@"+crictlVersion); err != nil {
			return err
		}
		bin = filepath.Join(gobin, "crictl")
		b.crictlBuilt = true
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	ep := "unix://" + b.sock
	cfg := filepath.Join(b.dir, "crictl.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 60\n", ep, ep), 0o600); err != nil {
		return err
	}
	b.crictl = []string{bin, "--config", cfg, "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s"}
	return nil
}

func (b *bench) crictlArgs(a ...string) []string { return append(slices.Clone(b.crictl), a...) }

// importCRI imports the archive into the cri plugin's namespace and waits
// until the plugin has seen every image.
func (b *bench) importCRI(ctx context.Context, archive string, names []string) error {
	if _, err := b.do(ctx, "ctr", "-a", b.sock, "-n", criNS, "images", "import", archive); err != nil {
		return err
	}
	for _, n := range names {
		err := poll(ctx, 10*time.Second, func() (bool, error) {
			_, err := b.do(ctx, b.crictlArgs("inspecti", n)...)
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("cri plugin does not see image %s: %w", n, err)
		}
	}
	return nil
}

// criPod runs a pod sandbox named name whose logs go to logDir and
// returns its ID and the path of its config (crictl create wants it).
func (b *bench) criPod(ctx context.Context, name, logDir string) (id, cfg string, err error) {
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return "", "", err
	}
	cfg = filepath.Join(b.dir, "cri", name+"-pod.json")
	pod := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "podbench", "uid": b.tag + "-" + name},
		"log_directory": logDir,
		"linux":         map[string]any{"cgroup_parent": "/" + b.tag},
	}
	if err := writeJSON(cfg, pod); err != nil {
		return "", "", err
	}
	out, err := b.do(ctx, b.crictlArgs("runp", cfg)...)
	return strings.TrimSpace(out), cfg, err
}

// criContainer creates a container in a pod with containerd's default
// seccomp profile (as ctr --seccomp and runclet), logging to
// <log_directory>/<name>.log.
func (b *bench) criContainer(ctx context.Context, podID, podCfg, name, img string, cmd ...string) (string, error) {
	cfg := filepath.Join(b.dir, "cri", filepath.Base(strings.TrimSuffix(podCfg, "-pod.json"))+"-"+name+".json")
	c := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": img},
		"command":  cmd,
		"log_path": name + ".log",
		"linux": map[string]any{"security_context": map[string]any{
			"seccomp": map[string]any{"profile_type": 0}, // RuntimeDefault
		}},
	}
	if err := writeJSON(cfg, c); err != nil {
		return "", err
	}
	out, err := b.do(ctx, b.crictlArgs("create", podID, cfg, podCfg)...)
	return strings.TrimSpace(out), err
}

// criStatus is what crictl inspect says about a container.
type criStatus struct {
	State      string    `json:"state"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	ExitCode   int       `json:"exitCode"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message"`
	LogPath    string    `json:"logPath"`
}

func (b *bench) criInspect(ctx context.Context, id string) (criStatus, error) {
	var v struct{ Status criStatus }
	out, err := b.do(ctx, b.crictlArgs("inspect", "-o", "json", id)...)
	if err == nil {
		err = json.Unmarshal([]byte(out), &v)
	}
	return v.Status, err
}

// criRemoveAll removes every CRI pod of our containerd and checks that
// no container is left in its namespace.
func (b *bench) criRemoveAll(ctx context.Context) error {
	out, err := b.do(ctx, b.crictlArgs("pods", "-q")...)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range strings.Fields(out) {
		if _, err := b.do(ctx, b.crictlArgs("rmp", "-f", id)...); err != nil {
			errs = append(errs, err)
		}
	}
	if out, err := b.do(ctx, "ctr", "-a", b.sock, "-n", criNS, "containers", "ls", "-q"); err != nil {
		errs = append(errs, err)
	} else if left := strings.Fields(out); len(left) > 0 {
		errs = append(errs, fmt.Errorf("containers left in namespace %s after removing every CRI pod: %s", criNS, strings.Join(left, " ")))
	}
	return errors.Join(errs...)
}

// removeCRICgroups removes the cgroup parent of our CRI pods, /<tag>, in
// every hierarchy; runc removed the pods' own cgroups below it.
func (b *bench) removeCRICgroups() error {
	v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + b.tag)
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + b.tag)
	var errs []error
	for _, top := range append(v1, v2...) {
		var dirs []string
		filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) { // children first
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}

// poll calls check every pollInterval until it says done, fails, ctx ends
// or limit passes.
func poll(ctx context.Context, limit time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still waiting after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}
