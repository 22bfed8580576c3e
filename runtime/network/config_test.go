package network

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runclet/runclet/internal/errdefs"
)

// captureLog sends slog's default logger to a buffer for the test.
func captureLog(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(old) })
	return &buf
}

func TestBuiltinDefaultWhenConfDirEmptyOrMissing(t *testing.T) {
	for _, missing := range []bool{false, true} {
		e := newTestEnvNoRoot(t)
		if missing {
			e.cfg.ConfDir = filepath.Join(e.dir, "does-not-exist")
		}
		m := e.manager(t)
		if m.NetworkName() != DefaultNetworkName {
			t.Fatalf("network %q, want %q", m.NetworkName(), DefaultNetworkName)
		}
		nc := m.current()
		if nc.source != builtinSource || nc.list.CNIVersion != DefaultCNIVersion {
			t.Fatalf("source %q version %q", nc.source, nc.list.CNIVersion)
		}
		var types []string
		for _, p := range nc.list.Plugins {
			types = append(types, p.Network.Type)
		}
		if strings.Join(types, ",") != "bridge,portmap" {
			t.Fatalf("plugins %v", types)
		}
		// The generated config carries the configured values.
		s := string(nc.list.Bytes)
		for _, want := range []string{`"bridge":"rcltestnone"`, `"subnet":"10.244.255.0/24"`, `"isGateway":true`,
			`"ipMasq":true`, `"hairpinMode":true`, `"dataDir":"` + e.cfg.IPAMDataDir + `"`, `"portMappings":true`,
			`"snat":true`, `"dst":"0.0.0.0/0"`} {
			if !strings.Contains(s, want) {
				t.Errorf("built-in config lacks %s: %s", want, s)
			}
		}
		if entries, _ := os.ReadDir(e.confDir); len(entries) != 0 {
			t.Fatal("the built-in config was written to the config dir")
		}
	}
}

func TestNewValidatesDefaults(t *testing.T) {
	for _, c := range []Config{
		{DefaultSubnet: "10.88.0.1/16"},
		{DefaultSubnet: "nonsense"},
		{DefaultBridge: "a-very-long-bridge-name"},
		{IPAMDataDir: "relative/dir"},
		{StateDir: "relative/dir"},
	} {
		if _, err := New(c); !errdefs.IsInvalidArgument(err) {
			t.Errorf("New(%+v): %v, want invalid argument", c, err)
		}
	}
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.ConfDir != DefaultConfDir || m.cfg.CacheDir != DefaultCacheDir || m.cfg.DefaultBridge != "runclet0" ||
		m.cfg.DefaultSubnet != AutoSubnet || m.cfg.StateDir != DefaultStateDir || len(m.cfg.BinDirs) != 2 {
		t.Fatalf("defaults: %+v", m.cfg)
	}
}

func TestConfDirPrecedence(t *testing.T) {
	e := newTestEnvNoRoot(t)
	logs := captureLog(t)
	writeConf(t, e.confDir, "05-broken.conflist", `{"cniVersion": "1.0.0", "name": "broken", "plugins": [`)
	writeConf(t, e.confDir, "07-noplugins.conflist", `{"cniVersion": "1.0.0", "name": "empty", "plugins": []}`)
	writeConf(t, e.confDir, "08-notype.conf", `{"cniVersion": "1.0.0", "name": "notype"}`)
	writeConf(t, e.confDir, "09-ignored.txt", `{"cniVersion": "1.0.0", "name": "txt", "type": "bridge"}`)
	writeConf(t, e.confDir, "20-second.conflist", map[string]any{"cniVersion": "1.0.0", "name": "second",
		"plugins": []any{map[string]any{"type": "bridge"}}})
	writeConf(t, e.confDir, "10-first.conflist", map[string]any{"cniVersion": "1.0.0", "name": "first",
		"plugins": []any{map[string]any{"type": "ptp"}, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}}})
	m := e.manager(t)
	if got := m.NetworkName(); got != "first" {
		t.Fatalf("network %q, want first (lowest valid file name)", got)
	}
	for _, f := range []string{"05-broken.conflist", "07-noplugins.conflist", "08-notype.conf"} {
		if !strings.Contains(logs.String(), f) {
			t.Errorf("no warning for %s in log:\n%s", f, logs)
		}
	}
	if strings.Contains(logs.String(), "09-ignored.txt") {
		t.Error("a .txt file was considered")
	}

	// Changes in the directory are picked up without a restart.
	if err := os.Remove(filepath.Join(e.confDir, "10-first.conflist")); err != nil {
		t.Fatal(err)
	}
	if got := m.NetworkName(); got != "second" {
		t.Fatalf("after removing first: %q", got)
	}
	// A single-plugin .conf is wrapped into a list.
	writeConf(t, e.confDir, "00-single.conf", `{"cniVersion": "0.4.0", "name": "single", "type": "bridge", "bridge": "x0",
		"ipam": {"type": "host-local", "subnet": "10.244.254.0/24"}}`)
	if got := m.NetworkName(); got != "single" {
		t.Fatalf("after adding a .conf: %q", got)
	}
	nc := m.current()
	if len(nc.list.Plugins) != 1 || nc.list.Plugins[0].Network.Type != "bridge" || nc.list.CNIVersion != "0.4.0" ||
		nc.list.Plugins[0].Network.IPAM.Type != "host-local" {
		t.Fatalf("wrapped .conf: %+v %s", nc.list, nc.list.Bytes)
	}
	// All invalid: back to the built-in network.
	for _, f := range []string{"00-single.conf", "20-second.conflist"} {
		os.Remove(filepath.Join(e.confDir, f))
	}
	if got := m.NetworkName(); got != DefaultNetworkName {
		t.Fatalf("only invalid configs left: %q, want the built-in", got)
	}
}

func TestReadyReportsMissingPlugin(t *testing.T) {
	requirePlugins(t, "bridge", "host-local", "portmap", "loopback")
	e := newTestEnvNoRoot(t)
	m := e.manager(t)
	if err := m.Ready(); err != nil {
		t.Fatalf("built-in network with Debian's plugins: %v", err)
	}
	writeConf(t, e.confDir, "10-missing.conflist", map[string]any{"cniVersion": "1.0.0", "name": "missing",
		"plugins": []any{map[string]any{"type": "bridge", "ipam": map[string]any{"type": "rcltest-no-such-ipam"}}}})
	err := m.Ready()
	if !isFailedPrecondition(err) || !strings.Contains(err.Error(), "rcltest-no-such-ipam") ||
		!strings.Contains(err.Error(), "10-missing.conflist") {
		t.Fatalf("Ready with a missing IPAM plugin: %v", err)
	}
	writeConf(t, e.confDir, "10-missing.conflist", map[string]any{"cniVersion": "1.0.0", "name": "missing",
		"plugins": []any{map[string]any{"type": "rcltest-no-such-plugin"}}})
	if err := m.Ready(); !isFailedPrecondition(err) || !strings.Contains(err.Error(), `"rcltest-no-such-plugin"`) {
		t.Fatalf("Ready with a missing plugin: %v", err)
	}
	// Setup refuses up front, with the same class (needs a netns to get there).
	if os.Geteuid() == 0 {
		ns := filepath.Join(e.dir, "ns")
		if err := NewNetNS(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { RemoveNetNS(ns) })
		if _, err := m.Setup(t.Context(), "rcltest-pod", ns, nil); !isFailedPrecondition(err) {
			t.Fatalf("Setup with a missing plugin: %v", err)
		}
		if in := inspectPod(t, ns); in.loUp {
			t.Fatal("Setup touched the netns although a plugin is missing")
		}
	}
	// No plugin directory at all.
	e.cfg.BinDirs = []string{filepath.Join(e.dir, "nobin")}
	os.Remove(filepath.Join(e.confDir, "10-missing.conflist"))
	m = e.manager(t)
	if err := m.Ready(); !isFailedPrecondition(err) {
		t.Fatalf("Ready without plugins: %v", err)
	}
}

func TestPortMappingsArg(t *testing.T) {
	got := portMappingsArg([]PortMapping{
		{ContainerPort: 80, HostPort: 8080},
		{Protocol: "SCTP", ContainerPort: 7, HostPort: 7, HostIP: "127.0.0.1"},
		{ContainerPort: 53, HostPort: 0},
	})
	if len(got) != 2 || got[0]["protocol"] != "tcp" || got[1]["protocol"] != "sctp" || got[1]["hostIP"] != "127.0.0.1" {
		t.Fatalf("%v", got)
	}
	if _, ok := got[0]["hostIP"]; ok {
		t.Fatal("empty hostIP passed")
	}
}

func TestSplitRuleSpec(t *testing.T) {
	line := `-A POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \"runclet\" id: \"pod-1\"" -j CNI-abc`
	args, err := splitRuleSpec(line)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-A", "POSTROUTING", "-s", "10.88.0.5/32", "-m", "comment", "--comment", `name: "runclet" id: "pod-1"`, "-j", "CNI-abc"}
	if strings.Join(args, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q", args)
	}
	if optionValue(args, "-j") != "CNI-abc" || optionValue(args, "--nope") != "" {
		t.Fatal("optionValue")
	}
	if _, err := splitRuleSpec(`-A X --comment "open`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
}

func isFailedPrecondition(err error) bool { return errors.Is(err, errdefs.ErrFailedPrecondition) }
