package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/runtime/pod"
)

// podManager builds the runtime the pod commands share.
func (g *globals) podManager() (*pod.Manager, *image.Store, error) {
	if os.Geteuid() != 0 {
		return nil, nil, errdefs.FailedPrecondition("running pods needs root")
	}
	images, err := g.imageStore()
	if err != nil {
		return nil, nil, err
	}
	stage1, err := g.stage1Path()
	if err != nil {
		return nil, nil, err
	}
	net, err := network.New(network.Config{
		ConfDir:       g.cfg.Network.ConfDir,
		BinDirs:       g.cfg.Network.BinDirs,
		CacheDir:      filepath.Join(g.cfg.Root, "cni", "cache"),
		IPAMDataDir:   filepath.Join(g.cfg.Root, "cni", "networks"),
		DefaultBridge: g.cfg.Network.DefaultBridge,
		DefaultSubnet: g.cfg.Network.DefaultSubnet,
		Name:          g.cfg.Network.Name,
		StateDir:      filepath.Join(g.cfg.Root, "cni"),
	})
	if err != nil {
		return nil, nil, err
	}
	g.network = net
	exitCmd, err := g.exitCommand()
	if err != nil {
		return nil, nil, err
	}
	m, err := pod.New(pod.Options{
		Layout:        pod.Layout{Root: g.cfg.Root, RunRoot: g.cfg.RunRoot},
		Images:        images,
		Network:       net,
		Stage1Path:    stage1,
		DefaultFlavor: g.cfg.Stage1.DefaultFlavor,
		SystemdCgroup: g.cfg.Cgroup.Driver == "systemd",
		MaxLogLine:    g.cfg.Log.MaxLineSize,
		ExitCommand:   exitCmd,
	})
	return m, images, err
}

// exitCommand is what the supervisor of a `runclet run` pod runs when
// its apps have exited: this binary, with this process's config and
// roots, ending the pod (the hidden `pod-exited` command).
func (g *globals) exitCommand() ([]string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding runclet's own path for the pod exit command: %w", err)
	}
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	return []string{self, "--config", abs(g.configPath), "--root", abs(g.cfg.Root), "--run-root", abs(g.cfg.RunRoot), "pod-exited"}, nil
}

// stage1Path finds the supervisor binary: configured, next to this
// binary (how `make build` and `make install` lay them out), or on PATH.
func (g *globals) stage1Path() (string, error) {
	if g.cfg.Stage1.Path != "" {
		return g.cfg.Stage1.Path, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "stage1-runc")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("stage1-runc"); err == nil {
		return p, nil
	}
	return "", errdefs.FailedPrecondition("stage1-runc not found next to runclet nor on PATH; set stage1.path in the config")
}

// findBeside finds a helper binary next to this one (how make build and
// make install lay them out) or on PATH.
func findBeside(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", errdefs.FailedPrecondition("%s not found next to runclet nor on PATH (make install puts it there)", name)
}
