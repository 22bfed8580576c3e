package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
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

func TestCRIDefaultsAndHandlers(t *testing.T) {
	c := Default()
	if c.CRI.Listen != "" || c.SocketPath() != "/run/runclet/runclet.sock" || c.CRI.StreamAddress != "127.0.0.1:0" {
		t.Fatalf("cri defaults: %+v, socket %s", c.CRI, c.SocketPath())
	}
	if c.CRI.MetricsAddress != "" {
		t.Fatalf("metrics are served by default: %q", c.CRI.MetricsAddress)
	}
	if c.CRI.StreamIdleTimeout != 4*time.Hour || c.CRI.StopTimeout != 10*time.Second || c.CRI.ResyncInterval != 10*time.Second {
		t.Fatalf("cri durations: %+v", c.CRI)
	}
	// fly is not served over CRI unless the config says so.
	if len(c.CRI.RuntimeHandlers) != 1 || c.CRI.RuntimeHandlers["runc"] != "runc" || c.CRI.Fly.Enable {
		t.Fatalf("handlers: %v, fly %+v", c.CRI.RuntimeHandlers, c.CRI.Fly)
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte(`
run_root = "/srv/run"
[cri]
resync_interval = "0s"
[cri.runtime_handlers]
debug = "fly"
[cri.fly]
enable = true
`), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.SocketPath() != "/srv/run/runclet.sock" || c.CRI.ResyncInterval != 0 {
		t.Fatalf("socket %s, resync %v", c.SocketPath(), c.CRI.ResyncInterval)
	}
	if len(c.CRI.RuntimeHandlers) != 2 || c.CRI.RuntimeHandlers["debug"] != "fly" || c.CRI.RuntimeHandlers["runc"] != "runc" || !c.CRI.Fly.Enable {
		t.Fatalf("handlers are not added on top of the defaults: %v", c.CRI.RuntimeHandlers)
	}

	for _, bad := range []string{
		"[cri]\nlisten = \"tcp://127.0.0.1:1\"\n",
		"[cri]\nlisten = \"unix://relative.sock\"\n",
		"[cri]\nstream_idle_timeout = \"0s\"\n",
		"[cri]\nstop_timeout = \"soon\"\n",
		"[cri.runtime_handlers]\nkata = \"vm\"\n",
		"[cri.runtime_handlers]\nfly = \"fly\"\n", // without cri.fly.enable
		"[cri.fly]\nenable = true\nallow = true\n",
		"[cri]\nmetrics_address = \"9464\"\n",
		"[cri]\nmetrics_address = \"127.0.0.1:\"\n",
	} {
		os.WriteFile(p, []byte(bad), 0o644)
		if _, err := Load(p); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: want InvalidArgument, got %v", bad, err)
		}
	}
	os.WriteFile(p, []byte("[cri]\nmetrics_address = \"127.0.0.1:9464\"\n"), 0o644)
	if c, err := Load(p); err != nil || c.CRI.MetricsAddress != "127.0.0.1:9464" {
		t.Fatalf("metrics_address: %v %v", c, err)
	}
	os.WriteFile(p, []byte("[cri]\nlisten = \"unix:///tmp/x.sock\"\n"), 0o644)
	if c, err := Load(p); err != nil || c.SocketPath() != "/tmp/x.sock" {
		t.Fatalf("listen: %v %v", c, err)
	}
}

func TestNRIDefaultsAndValidation(t *testing.T) {
	n := Default().NRI
	if n.Enable || n.SocketPath != "/var/run/nri/nri.sock" || n.PluginPath != "/opt/nri/plugins" ||
		n.PluginConfigPath != "/etc/nri/conf.d" || n.RegistrationTimeout != 5*time.Second || n.RequestTimeout != 2*time.Second {
		t.Fatalf("nri defaults: %+v", n)
	}
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("[nri]\nenable = true\nsocket_path = \"/tmp/nri/x.sock\"\nrequest_timeout = \"10s\"\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !c.NRI.Enable || c.NRI.SocketPath != "/tmp/nri/x.sock" || c.NRI.RequestTimeout != 10*time.Second || c.NRI.PluginPath != "/opt/nri/plugins" {
		t.Fatalf("nri override lost defaults: %+v", c.NRI)
	}
	for _, bad := range []string{
		"[nri]\nsocket_path = \"nri.sock\"\n",
		"[nri]\nplugin_path = \"\"\n",
		"[nri]\nrequest_timeout = \"0s\"\n",
		"[nri]\nregistration_timeout = \"-1s\"\n",
		"[nri]\nenabled = true\n",
	} {
		os.WriteFile(p, []byte(bad), 0o644)
		if _, err := Load(p); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: want InvalidArgument, got %v", bad, err)
		}
	}
}

func TestImageUnpackLimitsAndPlainHTTPCredentials(t *testing.T) {
	d := Default().Image.Unpack
	if d.MaxLayerSize != 128<<30 || d.MaxLayerEntries != 2_000_000 || d.ZstdMaxWindow != 128<<20 {
		t.Fatalf("unpack defaults: %+v", d)
	}
	if Default().Registries["x"].AllowPlainHTTPCredentials {
		t.Fatal("plain-HTTP credentials allowed by default")
	}
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte(`
[image.unpack]
max_layer_entries = 10
[registries."127.0.0.1:5000"]
allow_plain_http_credentials = true
`), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Image.Unpack; u.MaxLayerEntries != 10 || u.MaxLayerSize != d.MaxLayerSize || u.ZstdMaxWindow != d.ZstdMaxWindow {
		t.Fatalf("override lost defaults: %+v", u)
	}
	if !c.Registries["127.0.0.1:5000"].AllowPlainHTTPCredentials {
		t.Fatal("allow_plain_http_credentials lost")
	}
	for _, bad := range []string{"max_layer_size = 0", "max_layer_entries = -1", "zstd_max_window = 1024"} {
		os.WriteFile(p, []byte("[image.unpack]\n"+bad+"\n"), 0o644)
		if _, err := Load(p); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: want InvalidArgument, got %v", bad, err)
		}
	}
}
