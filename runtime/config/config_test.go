package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/runclet/runclet/runtime/errdefs"
)

func TestDefaultsParse(t *testing.T) {
	c := Default()
	if c.Root != "/var/lib/runclet" || c.RunRoot != "/run/runclet" || c.Image.MaxConcurrentDownloads != 3 {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestMissingDefaultFileIsFine(t *testing.T) {
	if _, err := os.Stat(DefaultPath); err == nil {
		t.Skip(DefaultPath + " exists on this machine; the missing-file case cannot be shown here")
	}
	if _, err := Load(""); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOverridesAndRejectsUnknown(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte(`
root = "/srv/r"
[registries."registry.k8s.io"]
mirrors = ["http://127.0.0.1:5000"]
[registries."my.internal:5000"]
insecure = true
`), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/srv/r" || c.RunRoot != "/run/runclet" {
		t.Fatalf("override lost defaults: %+v", c)
	}
	if got := c.Registries["registry.k8s.io"].Mirrors; len(got) != 1 || got[0] != "http://127.0.0.1:5000" {
		t.Fatalf("mirrors = %v", got)
	}
	if !c.Registries["my.internal:5000"].Insecure {
		t.Fatal("insecure lost")
	}

	os.WriteFile(p, []byte("roots = \"/x\"\n"), 0o644)
	if _, err := Load(p); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("unknown key: want InvalidArgument, got %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Fatal("an explicitly named missing file must be an error")
	}
}
