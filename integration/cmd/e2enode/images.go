package main

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
)

// The images the scenarios run. Every registry host is mirrored to one
// in-process test registry, which keeps the repository path.
const (
	busyboxImage = "docker.io/library/busybox:1.37"
	// pauseImage is the sandbox image a containerd node is configured with
	// (kubeadm's constant for Kubernetes 1.37). runclet has no pause
	// process; kubelet 1.37 asks no runtime for one.
	pauseImage = "registry.k8s.io/pause:3.10.2"
)

// pauseTags are served too, so a runtime whose built-in default differs
// still finds its sandbox image.
var pauseTags = []string{"3.10.2", "3.10.1", "3.10", "3.9", "3.6"}

// pushImages builds the test images from the busybox-static based
// testimage package and pushes them to reg.
func pushImages(reg *testregistry.Registry) error {
	base, err := testimage.Busybox()
	if err != nil {
		return fmt.Errorf("building busybox image: %w", err)
	}
	if _, err := reg.Push("library/busybox:1.37", base); err != nil {
		return err
	}
	pause, err := withCmd(base, "sleep", "2147483647")
	if err != nil {
		return err
	}
	for _, tag := range pauseTags {
		if _, err := reg.Push("pause:"+tag, pause); err != nil {
			return err
		}
	}
	return nil
}

func withCmd(base v1.Image, cmd ...string) (v1.Image, error) {
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config.Cmd = cmd
	return mutate.ConfigFile(base, cf)
}
