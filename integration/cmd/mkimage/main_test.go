package main

import (
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestDockerDefault(t *testing.T) {
	out := filepath.Join(t.TempDir(), "busybox.tar")
	if err := run([]string{"-o", out}); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("localhost/runclet/busybox:latest")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("default output is not a docker archive with the default name: %v", err)
	}
	if _, err := img.ConfigFile(); err != nil {
		t.Fatal(err)
	}
}

func TestOCIAndIndex(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-format", "oci", "-image", "whiteouts", "-name", "example.com/w:1"},
		{"-format", "oci", "-image", "index"},
	} {
		if err := run(append([]string{"-o", filepath.Join(dir, "x.tar")}, args...)); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}

func TestBadArguments(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.tar")
	for _, args := range [][]string{
		{},
		{"-o", out, "-format", "zip"},
		{"-o", out, "-image", "nope"},
		{"-o", out, "-image", "index"},
		{"-o", out, "extra"},
	} {
		if err := run(args); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
