// Package network connects runclet pods to the network: it pins a pod's
// network namespace as a bind-mounted file (there is no pause process),
// attaches that namespace through CNI plugins (libcni), and writes the
// per-pod /etc/resolv.conf, /etc/hosts and /etc/hostname that stage0
// bind-mounts into every app.
//
// The network used is the one Config.Name names or, without a name, the
// first valid CNI config in Config.ConfDir (sorted by file name, as
// containerd does); when that directory holds none, a built-in default: a
// bridge with host-local IPAM, masquerading and portmap, so that `runclet
// run` works on a host with no CNI setup at all. The default lives in
// memory only; nothing is written to /etc/cni/net.d. Its subnet is picked
// among free ones ("auto") and recorded under Config.StateDir. A bridge
// network whose subnet overlaps an address or route already on the host is
// refused at Setup.
//
// See docs/networking.md for the whole picture.
package network

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/runclet/runclet/internal/errdefs"
)

// Defaults for Config fields left empty.
const (
	// DefaultConfDir is where CNI network configs are looked up.
	DefaultConfDir = "/etc/cni/net.d"
	// DefaultCacheDir is libcni's result cache under runclet's default data root.
	DefaultCacheDir = "/var/lib/runclet/cni/cache"
	// DefaultIPAMDataDir is the host-local IPAM state of the built-in network
	// under runclet's default data root.
	DefaultIPAMDataDir = "/var/lib/runclet/cni/networks"
	// DefaultBridge is the bridge of the built-in network.
	DefaultBridge = "runclet0"
	// DefaultSubnet is the pod subnet of the built-in network: AutoSubnet.
	DefaultSubnet = AutoSubnet
	// AutoSubnet as DefaultSubnet picks the first free subnet of
	// AutoSubnetCandidates once and records it under StateDir.
	AutoSubnet = "auto"
	// DefaultStateDir holds runclet's own network records under its
	// default data root.
	DefaultStateDir = "/var/lib/runclet/cni"
	// DefaultNetworkName is the CNI network name of the built-in network.
	DefaultNetworkName = "runclet"
	// DefaultCNIVersion is the CNI spec version of the built-in network and
	// of the loopback attachment; 1.0.0 is understood by every plugin
	// release since 1.0 (Debian 12 ships 1.1.1).
	DefaultCNIVersion = "1.0.0"
	// PodIfName is the name of the pod's interface in its network namespace.
	PodIfName = "eth0"

	loopbackNetwork = "cni-loopback"
	loopbackIfName  = "lo"
	builtinSource   = "built-in default"
)

// DefaultBinDirs are the directories searched for CNI plugin binaries:
// Debian/Ubuntu's package location first, then the upstream convention.
var DefaultBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// confExtensions are the file name extensions of CNI configs in ConfDir.
var confExtensions = []string{".conflist", ".conf", ".json"}

// Config is the network part of runclet's configuration. Every field has a
// default (the Default* constants), so the zero Config is usable.
type Config struct {
	// ConfDir holds the CNI network configs; default /etc/cni/net.d.
	ConfDir string
	// BinDirs are the plugin directories; default /usr/lib/cni, /opt/cni/bin.
	BinDirs []string
	// CacheDir is libcni's result cache. It must live under runclet's data
	// root (not /var/lib/cni) and survive reboots of the daemon: Teardown
	// reads the cached config and result of each pod from it.
	CacheDir string
	// DefaultBridge is the bridge of the built-in default network, used when
	// ConfDir has no usable config (like rkt's default network); default runclet0.
	DefaultBridge string
	// DefaultSubnet is the pod subnet of the built-in network, or "auto"
	// (the default): the first of AutoSubnetCandidates that overlaps no
	// address or route of the host, chosen once and recorded in StateDir.
	DefaultSubnet string
	// IPAMDataDir is where host-local keeps the built-in network's address
	// allocations, under runclet's data root.
	IPAMDataDir string

	// Name is the CNI network pods attach to, by its "name": the first
	// config in ConfDir (by file name) with that name, or the built-in
	// network when Name is DefaultNetworkName and no config has that name.
	// A name found nowhere makes Ready and Setup fail. Empty: the first
	// valid config in ConfDir, else the built-in network.
	Name string
	// StateDir holds runclet's own network records (the built-in network's
	// auto subnet, the network chosen last, the built-in bridge's lock),
	// under runclet's data root; default /var/lib/runclet/cni.
	StateDir string

	// candidates replaces AutoSubnetCandidates (tests).
	candidates []netip.Prefix
}

func (c Config) withDefaults() Config {
	if c.ConfDir == "" {
		c.ConfDir = DefaultConfDir
	}
	if len(c.BinDirs) == 0 {
		c.BinDirs = append([]string(nil), DefaultBinDirs...)
	}
	if c.CacheDir == "" {
		c.CacheDir = DefaultCacheDir
	}
	if c.DefaultBridge == "" {
		c.DefaultBridge = DefaultBridge
	}
	if c.DefaultSubnet == "" {
		c.DefaultSubnet = DefaultSubnet
	}
	if c.IPAMDataDir == "" {
		c.IPAMDataDir = DefaultIPAMDataDir
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if len(c.candidates) == 0 {
		c.candidates = AutoSubnetCandidates()
	}
	return c
}

// netConfig is the network pods attach to and where it came from.
type netConfig struct {
	name   string
	list   *libcni.NetworkConfigList // nil for the built-in network until its subnet is resolved, or with err
	source string                    // config file path or builtinSource
	err    error                     // the configured Name was not found
}

func (nc *netConfig) builtin() bool { return nc.source == builtinSource }

// Manager attaches pods to the CNI network. It is safe for concurrent use;
// calls for one pod must be serialized by the caller (the pod lock).
type Manager struct {
	cfg      Config
	cni      *libcni.CNIConfig
	loopback *libcni.NetworkConfigList

	bmu     sync.Mutex                // guards builtin
	builtin *libcni.NetworkConfigList // nil while an "auto" subnet is not resolved

	mu          sync.Mutex
	fingerprint string // of ConfDir's config files when cur was loaded
	cur         *netConfig
	recorded    string // the choice last compared with StateDir's record
}

// New validates cfg (after applying defaults) and returns a Manager. It
// does not require a config in ConfDir nor the plugins to be present: Ready
// says whether networking can work, and the config directory is re-read
// whenever its files change, so a network add-on may install its config
// after runclet started.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := validateBuiltin(cfg); err != nil {
		return nil, err
	}
	var builtin *libcni.NetworkConfigList
	if cfg.DefaultSubnet != AutoSubnet {
		var err error
		if builtin, err = builtinConfList(cfg, netip.MustParsePrefix(cfg.DefaultSubnet)); err != nil {
			return nil, err
		}
	}
	lo, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"` + DefaultCNIVersion +
		`","name":"` + loopbackNetwork + `","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		return nil, fmt.Errorf("loopback network config: %w", err)
	}
	m := &Manager{
		cfg:      cfg,
		cni:      libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, nil),
		loopback: lo,
		builtin:  builtin,
	}
	m.current()
	return m, nil
}

// validateBuiltin checks the settings of the built-in network.
func validateBuiltin(cfg Config) error {
	if cfg.DefaultSubnet != AutoSubnet {
		subnet, err := netip.ParsePrefix(cfg.DefaultSubnet)
		if err != nil {
			return errdefs.InvalidArgument("network config: default subnet %q (want a prefix such as 10.88.0.0/16, or %q): %w", cfg.DefaultSubnet, AutoSubnet, err)
		}
		if subnet.Masked() != subnet {
			return errdefs.InvalidArgument("network config: default subnet %q has host bits set (did you mean %s?)", cfg.DefaultSubnet, subnet.Masked())
		}
	}
	if n := len(cfg.DefaultBridge); n > 15 || strings.ContainsAny(cfg.DefaultBridge, "/ \t\n:") {
		return errdefs.InvalidArgument("network config: default bridge name %q is not a valid interface name (at most 15 characters, no '/', ':' or spaces)", cfg.DefaultBridge)
	}
	for _, d := range []string{cfg.IPAMDataDir, cfg.StateDir} {
		if !filepath.IsAbs(d) {
			return errdefs.InvalidArgument("network config: directory %q is not an absolute path", d)
		}
	}
	return nil
}

// builtinConfList is the default network: a bridge with host-local IPAM,
// masquerading and hairpin, then portmap for host ports. Only plugins from
// the standard plugin set are used (all in Debian's containernetworking-plugins).
func builtinConfList(cfg Config, subnet netip.Prefix) (*libcni.NetworkConfigList, error) {
	defaultRoute := "0.0.0.0/0"
	if subnet.Addr().Is6() {
		defaultRoute = "::/0"
	}
	conf := map[string]any{
		"cniVersion": DefaultCNIVersion,
		"name":       DefaultNetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      cfg.DefaultBridge,
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": subnet.String()}}},
					"routes":  []map[string]string{{"dst": defaultRoute}},
					"dataDir": cfg.IPAMDataDir,
				},
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
				"snat":         true,
			},
		},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("built-in network config: %w", err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("built-in network config: %w", err)
	}
	return list, nil
}

// current returns the network in effect, re-reading ConfDir when the set of
// config files (names, sizes, modification times) changed since last time.
// A change of network while running is logged as a warning.
func (m *Manager) current() *netConfig {
	m.mu.Lock()
	defer m.mu.Unlock()
	files, fp, err := m.confFiles()
	if err != nil {
		if m.cur == nil || m.fingerprint != "error" {
			slog.Warn("cannot read CNI config dir", "dir", m.cfg.ConfDir, "err", err)
		}
		m.fingerprint = "error"
		files = nil
	} else if m.cur != nil && fp == m.fingerprint {
		return m.cur
	} else {
		m.fingerprint = fp
	}
	next := m.choose(files)
	if m.cur == nil || m.cur.source != next.source || m.cur.name != next.name || (m.cur.err == nil) != (next.err == nil) {
		attrs := []any{"network", next.name, "source", next.source}
		if next.builtin() {
			attrs = append(attrs, "bridge", m.cfg.DefaultBridge, "subnet", m.cfg.DefaultSubnet)
		}
		switch {
		case next.err != nil:
			slog.Warn("configured CNI network not found", "err", next.err)
		case m.cur != nil && m.cur.err == nil:
			slog.Warn("CNI network changed", append(attrs, "previous", m.cur.name, "previous_source", m.cur.source)...)
		default:
			slog.Info("using CNI network", attrs...)
		}
	}
	m.cur = next
	return m.cur
}

// choose picks the network among ConfDir's files (sorted by name): the
// first with the configured Name, or without a Name the first valid one;
// the built-in network when none is (or Name is the built-in's).
func (m *Manager) choose(files []string) *netConfig {
	var seen []string
	for _, f := range files {
		list, err := loadConfFile(f)
		if err != nil {
			slog.Warn("skipping invalid CNI network config", "file", f, "err", err)
			continue
		}
		if m.cfg.Name == "" || list.Name == m.cfg.Name {
			return &netConfig{name: list.Name, list: list, source: f}
		}
		seen = append(seen, fmt.Sprintf("%q (%s)", list.Name, filepath.Base(f)))
	}
	if m.cfg.Name == "" || m.cfg.Name == DefaultNetworkName {
		m.bmu.Lock()
		defer m.bmu.Unlock()
		return &netConfig{name: DefaultNetworkName, list: m.builtin, source: builtinSource}
	}
	there := "none"
	if len(seen) > 0 {
		there = strings.Join(seen, ", ")
	}
	return &netConfig{name: m.cfg.Name, source: m.cfg.ConfDir, err: errdefs.FailedPrecondition(
		"CNI network %q (config network.name) not found in %s; valid networks there: %s", m.cfg.Name, m.cfg.ConfDir, there)}
}

// confFiles lists ConfDir's config files sorted by name, and a fingerprint
// of them. A missing directory is not an error: it means "no config".
func (m *Manager) confFiles() ([]string, string, error) {
	entries, err := os.ReadDir(m.cfg.ConfDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	var files []string
	var fp strings.Builder
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || !contains(confExtensions, ext) {
			continue
		}
		p := filepath.Join(m.cfg.ConfDir, e.Name())
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		files = append(files, p)
		fmt.Fprintf(&fp, "%s\x00%d\x00%d\x00", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	sort.Strings(files)
	return files, fp.String(), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// loadConfFile reads one CNI config: a conflist, or a single-plugin config
// (.conf/.json without "plugins"), which is wrapped into a one-plugin list.
func loadConfFile(path string) (*libcni.NetworkConfigList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	var list *libcni.NetworkConfigList
	if _, ok := raw["plugins"]; ok || filepath.Ext(path) == ".conflist" {
		list, err = libcni.ConfListFromFile(path)
	} else {
		list, err = wrapSinglePlugin(data, raw)
	}
	if err != nil {
		return nil, err
	}
	if list.Name == "" {
		return nil, errors.New("network has no name")
	}
	if len(list.Plugins) == 0 {
		return nil, errors.New("network has no plugins")
	}
	return list, nil
}

// wrapSinglePlugin turns a single-plugin config into a conflist holding it.
func wrapSinglePlugin(data []byte, raw map[string]json.RawMessage) (*libcni.NetworkConfigList, error) {
	if _, ok := raw["type"]; !ok {
		return nil, errors.New(`neither a plugin list ("plugins") nor a plugin ("type")`)
	}
	var hdr struct {
		Name       string `json:"name"`
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(data, &hdr); err != nil {
		return nil, err
	}
	wrapped, err := json.Marshal(map[string]any{
		"name":       hdr.Name,
		"cniVersion": hdr.CNIVersion,
		"plugins":    []json.RawMessage{bytes.TrimSpace(data)},
	})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(wrapped)
}

// Ready reports nil when a usable network config exists (loaded from
// ConfDir or the built-in default) and all of its plugins are found in
// BinDirs; otherwise an error of class FailedPrecondition
// saying why, for CRI Status NetworkReady=false with a reason.
func (m *Manager) Ready() error {
	return m.checkPlugins(m.current())
}

// NetworkName returns the name of the network pods attach to.
func (m *Manager) NetworkName() string {
	return m.current().name
}

// builtinPluginTypes are the plugins (and IPAM) the built-in network runs.
var builtinPluginTypes = []string{"bridge", "host-local", "portmap"}

// checkPlugins verifies that every plugin binary nc needs (including IPAM
// plugins) is present. Loopback is not a plugin call any more.
func (m *Manager) checkPlugins(nc *netConfig) error {
	if nc.err != nil {
		return nc.err
	}
	var types []string
	if nc.list == nil && nc.builtin() {
		types = builtinPluginTypes
	} else {
		for _, p := range nc.list.Plugins {
			if p.Network == nil {
				continue
			}
			types = append(types, p.Network.Type)
			if p.Network.IPAM.Type != "" {
				types = append(types, p.Network.IPAM.Type)
			}
		}
	}
	for _, t := range types {
		if _, err := invoke.FindInPath(t, m.cfg.BinDirs); err != nil {
			return errdefs.FailedPrecondition("network %q (%s): plugin %q not found in %s",
				nc.name, nc.source, t, strings.Join(m.cfg.BinDirs, ":"))
		}
	}
	return nil
}
