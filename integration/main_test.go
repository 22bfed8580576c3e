// Package integration runs the real runclet binaries against real images
// served from a registry on 127.0.0.1.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// whyRoot is why most tests here need root.
const whyRoot = "runclet unpacks images with their owners and device nodes"

// runcletBin is built once per test run, so the tests exercise exactly
// what `make build` ships.
var runcletBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runclet-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runcletBin = filepath.Join(dir, "runclet")
	// RUNCLET_TEST_BINDIR names a directory with runclet and stage1-runc
	// built already: the vmtest guest has no Go toolchain, the host builds
	// them and shares them in.
	if pre := os.Getenv("RUNCLET_TEST_BINDIR"); pre != "" {
		runcletBin = filepath.Join(pre, "runclet")
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	// stage1-runc goes next to runclet, where runclet looks for it.
	for _, b := range [][]string{
		{"build", "-o", runcletBin, "github.com/runclet/runclet/cmd/runclet"},
		{"build", "-tags", "seccomp", "-o", filepath.Join(dir, "stage1-runc"), "github.com/runclet/runclet/cmd/stage1-runc"},
		{"build", "-o", filepath.Join(dir, "runclet-init"), "github.com/runclet/runclet/cmd/runclet-init"}, // static: runs in any image
	} {
		build := exec.Command("go", b...)
		if filepath.Base(b[len(b)-1]) == "runclet-init" {
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building:", b, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instance is a private runclet: its own data and run roots and config.
type instance struct {
	t       testing.TB
	root    string
	runRoot string
	config  string
}

func newInstance(t testing.TB, configTOML string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{t: t, root: filepath.Join(dir, "data"), runRoot: filepath.Join(dir, "run"), config: filepath.Join(dir, "runclet.toml")}
	if !strings.Contains(configTOML, "[trust") {
		// The tests' registries run on 127.0.0.1 (any port); instances
		// trust them unchecked, as an operator would with `runclet trust
		// add 127.0.0.1 --accept`. Trust tests write their own [trust].
		configTOML += "\n" + acceptLoopbackTrust
	}
	if cgroupDriver == "systemd" {
		configTOML += "\n[cgroup]\ndriver = \"systemd\"\n"
	}
	if err := os.WriteFile(in.config, []byte(configTOML), 0o644); err != nil {
		t.Fatal(err)
	}
	return in
}

// run runs runclet with the instance's roots and returns stdout; it fails
// the test on a non-zero exit.
func (in *instance) run(args ...string) string {
	in.t.Helper()
	out, errOut, err := in.try(args...)
	if err != nil {
		in.t.Fatalf("runclet %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out, errOut)
	}
	return out
}

// try runs runclet and returns stdout, stderr and the exit error.
func (in *instance) try(args ...string) (string, string, error) {
	full := append([]string{"--config", in.config, "--root", in.root, "--run-root", in.runRoot}, args...)
	cmd := exec.Command(runcletBin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// acceptLoopbackTrust is a trust rule accepting images from registries
// on 127.0.0.1 without a signature check.
const acceptLoopbackTrust = "[[trust.rules]]\nprefix = \"127.0.0.1\"\naction = \"accept\"\n"
