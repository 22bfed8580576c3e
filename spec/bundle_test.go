package spec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

func TestWriteBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "apps", "web")
	s := mustGenerate(t, busyboxImage(), busyboxFiles(), App{Name: "web"}, testPod(), FlavorRunc)
	if err := WriteBundle(dir, s); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config.json mode = %v, want 0600", fi.Mode().Perm())
	}
	if fi, err := os.Stat(filepath.Join(dir, DefaultRootfs)); err != nil || !fi.IsDir() {
		t.Errorf("rootfs mount point: %v", err)
	}

	// Overwrite: the new spec replaces the old one, nothing is left over.
	s.Process.Args = []string{"/bin/true"}
	if err := WriteBundle(dir, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Process.Args, " ") != "/bin/true" {
		t.Errorf("args = %q after overwrite", got.Process.Args)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "config.json,rootfs" {
		t.Errorf("bundle holds %v, want only config.json and rootfs", names)
	}
	if err := Validate(dir); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestWriteBundleAbsoluteRoot(t *testing.T) {
	dir := t.TempDir()
	s := &specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "/somewhere/else/rootfs"}}
	if err := WriteBundle(dir, s); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DefaultRootfs)); !os.IsNotExist(err) {
		t.Errorf("rootfs created for a rootfs outside the bundle: %v", err)
	}
	s.Root.Path = filepath.Join(dir, DefaultRootfs)
	if err := WriteBundle(dir, s); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DefaultRootfs)); err != nil {
		t.Errorf("rootfs not created for the bundle's own absolute rootfs: %v", err)
	}
}

func TestWriteBundleFailureCleansUp(t *testing.T) {
	// A directory in the way makes the final rename fail, as root too.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, ConfigName, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := &specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "/r"}}
	if err := WriteBundle(dir, s); err == nil {
		t.Fatal("WriteBundle over a directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != ConfigName {
		t.Errorf("bundle holds %v after a failed write, want no temporary files", entries)
	}
}

func TestWriteBundleNil(t *testing.T) {
	wantInvalid(t, WriteBundle(t.TempDir(), nil))
}

func TestReadBundleErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadBundle(dir); !errdefs.IsNotFound(err) {
		t.Errorf("missing config: %v, want not found", err)
	}
	if err := Validate(dir); !errdefs.IsNotFound(err) {
		t.Errorf("Validate without config: %v, want not found", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigName), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadBundle(dir)
	wantInvalid(t, err)
}

func TestValidateRejects(t *testing.T) {
	dir := t.TempDir()
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, testPod(), FlavorRunc)
	s.Process.Cwd = "relative"
	s.Process.Env = append(s.Process.Env, "NOEQUALS")
	s.Process.Capabilities.Effective = append(s.Process.Capabilities.Effective, "CAP_NET_ADMIN")
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "rel", Type: "bind", Source: "/x"})
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace, Path: "ns/time"})
	s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/x", Type: "q"}}
	if err := WriteBundle(dir, s); err != nil {
		t.Fatal(err)
	}
	err := Validate(dir)
	wantInvalid(t, err)
	for _, want := range []string{`cwd "relative"`, `env "NOEQUALS"`, `CAP_NET_ADMIN`, `mount destination "rel"`, `namespace path "ns/time"`, `device /dev/x has invalid type`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}

	// A rootfs that is missing is a MUST-level problem.
	if err := os.Remove(filepath.Join(dir, DefaultRootfs)); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, testPod(), FlavorRunc))
	if err != nil {
		t.Fatal(err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, ConfigName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Validate(dir); err == nil || !strings.Contains(err.Error(), "root path") {
		t.Errorf("Validate without rootfs = %v", err)
	}
}

func TestValidateToleratesRuncValidSpecs(t *testing.T) {
	// Things runc accepts and runtime-tools v0.9.0 does not: joined
	// namespaces with a hostname and net sysctls, Kubernetes-style env
	// names, device minor 0, an AppArmor profile, free-form annotations.
	dir := t.TempDir()
	app := App{
		Name:            "a",
		Env:             []string{"my.var=1", "dash-name=2"},
		ApparmorProfile: "runclet-default",
		Sysctls:         map[string]string{"net.ipv4.ip_forward": "1", "fs.mqueue.msg_max": "10"},
		Devices:         []Device{{HostPath: "/dev/tty", Type: "c", Major: 5, Minor: 0}},
		Annotations:     map[string]string{"kubernetes.io/config.seen": "now"},
	}
	s := mustGenerate(t, busyboxImage(), nil, app, testPod(), FlavorRunc)
	if err := WriteBundle(dir, s); err != nil {
		t.Fatal(err)
	}
	if err := Validate(dir); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
