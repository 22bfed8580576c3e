// Package config is runclet's one configuration file. The defaults live in
// default.toml, embedded: it is both what `runclet config default` prints
// and the base every loaded file is decoded over, so the two cannot drift.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/runclet/runclet/internal/errdefs"
)

// DefaultPath is where runclet looks for its configuration file.
const DefaultPath = "/etc/runclet/runclet.toml"

//go:embed default.toml
var defaultTOML string

// Config is the whole configuration.
type Config struct {
	Root       string              `toml:"root"`
	RunRoot    string              `toml:"run_root"`
	Stage1     Stage1              `toml:"stage1"`
	Cgroup     Cgroup              `toml:"cgroup"`
	Log        Log                 `toml:"log"`
	Network    Network             `toml:"network"`
	Image      Image               `toml:"image"`
	CRI        CRI                 `toml:"cri"`
	NRI        NRI                 `toml:"nri"`
	Registries map[string]Registry `toml:"registries"`
	Trust      Trust               `toml:"trust"`
}

// Stage1 selects the pod supervisor.
type Stage1 struct {
	Path          string `toml:"path"`
	DefaultFlavor string `toml:"default_flavor"`
}

// Cgroup selects the cgroup driver.
type Cgroup struct {
	Driver string `toml:"driver"`
}

// Log tunes CRI log files.
type Log struct {
	MaxLineSize int `toml:"max_line_size"`
}

// Network configures CNI.
type Network struct {
	ConfDir       string   `toml:"conf_dir"`
	BinDirs       []string `toml:"bin_dirs"`
	DefaultBridge string   `toml:"default_bridge"`
	DefaultSubnet string   `toml:"default_subnet"`

	// Name chooses the CNI network by name; "" is the first valid config.
	Name string `toml:"name"`
}

// Image tunes the image store.
type Image struct {
	MaxConcurrentDownloads int         `toml:"max_concurrent_downloads"`
	Unpack                 ImageUnpack `toml:"unpack"`
}

// ImageUnpack bounds what one layer may cost to unpack; a layer over a
// limit is refused and what was unpacked of it removed.
type ImageUnpack struct {
	// MaxLayerSize caps a layer's uncompressed size in bytes: the tar
	// stream and the sum of its files' sizes (sparse files count in full).
	MaxLayerSize int64 `toml:"max_layer_size"`
	// MaxLayerEntries caps the number of entries (files, directories,
	// links, whiteouts) in one layer.
	MaxLayerEntries int64 `toml:"max_layer_entries"`
	// ZstdMaxWindow caps the window, in bytes, a zstd layer may declare:
	// the decoder allocates about that much memory per layer.
	ZstdMaxWindow int64 `toml:"zstd_max_window"`
}

func (u ImageUnpack) validate() error {
	if u.MaxLayerSize < 1 || u.MaxLayerEntries < 1 {
		return fmt.Errorf("image.unpack.max_layer_size and image.unpack.max_layer_entries must be positive")
	}
	if u.ZstdMaxWindow < 1<<20 {
		return fmt.Errorf("image.unpack.zstd_max_window must be at least 1048576 (1 MiB)")
	}
	return nil
}

// CRI configures `runclet daemon`, the CRI server.
type CRI struct {
	// Listen is "unix:///path"; "" means unix://<run root>/runclet.sock.
	Listen string `toml:"listen"`
	// StreamAddress is the host:port of the streaming server.
	StreamAddress string `toml:"stream_address"`
	// StreamIdleTimeout closes idle streaming connections.
	StreamIdleTimeout time.Duration `toml:"stream_idle_timeout"`
	// StopTimeout bounds the graceful stop of the gRPC server.
	StopTimeout time.Duration `toml:"stop_timeout"`
	// ResyncInterval is how often pods with live apps are re-read; 0: never.
	ResyncInterval time.Duration `toml:"resync_interval"`
	// MetricsAddress is the host:port serving Prometheus metrics at
	// /metrics; "" turns them off.
	MetricsAddress string `toml:"metrics_address"`
	// RuntimeHandlers maps CRI runtime handler names to stage1 flavors.
	RuntimeHandlers map[string]string `toml:"runtime_handlers"`
	// Fly is the opt-in for the fly flavor over CRI.
	Fly CRIFly `toml:"fly"`
}

// CRIFly is the opt-in for the fly flavor over CRI: fly pods share the
// host's network, PID and IPC namespaces, so the daemon serves them only
// when Enable is set.
type CRIFly struct {
	// Enable lets the daemon serve fly pods (handler "fly" unless
	// RuntimeHandlers maps that name otherwise).
	Enable bool `toml:"enable"`
}

// NRI configures the Node Resource Interface: plugins that hook pod and
// container lifecycle events of `runclet daemon` (github.com/containerd/nri).
type NRI struct {
	// Enable turns NRI on.
	Enable bool `toml:"enable"`
	// SocketPath is where external plugins connect.
	SocketPath string `toml:"socket_path"`
	// PluginPath holds pre-installed plugins, started with the daemon.
	PluginPath string `toml:"plugin_path"`
	// PluginConfigPath holds the configuration of pre-installed plugins.
	PluginConfigPath string `toml:"plugin_config_path"`
	// RegistrationTimeout bounds a plugin's registration.
	RegistrationTimeout time.Duration `toml:"registration_timeout"`
	// RequestTimeout bounds a plugin's handling of one event.
	RequestTimeout time.Duration `toml:"request_timeout"`
}

// SocketPath is the CRI socket's path: Listen without its unix:// scheme,
// or <run root>/runclet.sock.
func (c *Config) SocketPath() string {
	if c.CRI.Listen == "" {
		return filepath.Join(c.RunRoot, "runclet.sock")
	}
	return strings.TrimPrefix(c.CRI.Listen, "unix://")
}

// Registry is what runclet knows about one registry host.
type Registry struct {
	// Mirrors are endpoints ("http://127.0.0.1:5000", "https://mirror.example")
	// tried in order before the host itself; each serves the same repository
	// paths. A mirror without a scheme is spoken to over HTTPS.
	Mirrors []string `toml:"mirrors"`
	// Insecure allows plain HTTP and unverified TLS for this host.
	Insecure bool `toml:"insecure"`
	// AllowPlainHTTPCredentials lets credentials for this host go over
	// plain HTTP (loopback included); without it they are withheld there.
	AllowPlainHTTPCredentials bool `toml:"allow_plain_http_credentials"`
}

// DefaultTOML is the commented default configuration.
func DefaultTOML() string { return defaultTOML }

// Default returns the built-in configuration.
func Default() *Config {
	c, err := parse(defaultTOML, "built-in defaults")
	if err != nil {
		panic(err) // default.toml is part of the binary; a test covers it
	}
	return c
}

// Load reads path over the defaults. A missing file is not an error when
// path is DefaultPath: no file is needed to run runclet.
func Load(path string) (*Config, error) {
	if path == "" {
		path = DefaultPath
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && path == DefaultPath {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := parse(string(data), path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func parse(data, source string) (*Config, error) {
	c := &Config{}
	if source != "built-in defaults" {
		c = Default()
	}
	md, err := toml.Decode(data, c)
	if err != nil {
		return nil, errdefs.InvalidArgument("config %s: %w", source, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, errdefs.InvalidArgument("config %s: unknown keys: %s", source, strings.Join(keys, ", "))
	}
	if c.Registries == nil {
		c.Registries = map[string]Registry{}
	}
	return c, c.validate(source)
}

func (c *Config) validate(source string) error {
	if c.Root == "" || c.RunRoot == "" {
		return errdefs.InvalidArgument("config %s: root and run_root must not be empty", source)
	}
	if c.Image.MaxConcurrentDownloads < 1 {
		return errdefs.InvalidArgument("config %s: image.max_concurrent_downloads must be at least 1", source)
	}
	if err := c.Image.Unpack.validate(); err != nil {
		return errdefs.InvalidArgument("config %s: %w", source, err)
	}
	if c.Cgroup.Driver != "cgroupfs" && c.Cgroup.Driver != "systemd" {
		return errdefs.InvalidArgument("config %s: cgroup.driver %q: want cgroupfs or systemd", source, c.Cgroup.Driver)
	}
	if c.Stage1.DefaultFlavor != "runc" && c.Stage1.DefaultFlavor != "fly" {
		return errdefs.InvalidArgument("config %s: stage1.default_flavor %q: want runc or fly", source, c.Stage1.DefaultFlavor)
	}
	if c.Log.MaxLineSize < 1024 {
		return errdefs.InvalidArgument("config %s: log.max_line_size must be at least 1024", source)
	}
	if err := c.CRI.validate(); err != nil {
		return errdefs.InvalidArgument("config %s: %w", source, err)
	}
	if err := c.NRI.validate(); err != nil {
		return errdefs.InvalidArgument("config %s: %w", source, err)
	}
	if err := c.Trust.validate(); err != nil {
		return errdefs.InvalidArgument("config %s: %w", source, err)
	}
	for host, r := range c.Registries {
		for _, m := range r.Mirrors {
			if m == "" || strings.Contains(strings.TrimPrefix(strings.TrimPrefix(m, "http://"), "https://"), "://") {
				return errdefs.InvalidArgument("config %s: registries.%q: bad mirror %q", source, host, m)
			}
		}
	}
	return nil
}

func (c CRI) validate() error {
	if c.Listen != "" && (!strings.HasPrefix(c.Listen, "unix://") || !filepath.IsAbs(strings.TrimPrefix(c.Listen, "unix://"))) {
		return fmt.Errorf("cri.listen %q: want unix:///absolute/path", c.Listen)
	}
	if c.StreamAddress == "" {
		return fmt.Errorf("cri.stream_address must not be empty (127.0.0.1:0 picks a free port)")
	}
	if c.StreamIdleTimeout <= 0 {
		return fmt.Errorf("cri.stream_idle_timeout must be positive")
	}
	if c.MetricsAddress != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddress); err != nil || port == "" {
			return fmt.Errorf("cri.metrics_address %q: want host:port (\"127.0.0.1:9464\"), or \"\" for none", c.MetricsAddress)
		}
	}
	if c.StopTimeout < 0 || c.ResyncInterval < 0 {
		return fmt.Errorf("cri.stop_timeout and cri.resync_interval must not be negative")
	}
	for name, flavor := range c.RuntimeHandlers {
		if name == "" {
			return fmt.Errorf("cri.runtime_handlers: the empty handler is always stage1.default_flavor")
		}
		if flavor != "runc" && flavor != "fly" {
			return fmt.Errorf("cri.runtime_handlers.%s = %q: want runc or fly", name, flavor)
		}
		if flavor == "fly" && !c.Fly.Enable {
			return fmt.Errorf("cri.runtime_handlers.%s = \"fly\": fly pods share the host's network, PID and IPC namespaces; set cri.fly.enable = true to serve them", name)
		}
	}
	return nil
}

func (n NRI) validate() error {
	for _, p := range []struct{ key, path string }{
		{"socket_path", n.SocketPath}, {"plugin_path", n.PluginPath}, {"plugin_config_path", n.PluginConfigPath},
	} {
		if !filepath.IsAbs(p.path) {
			return fmt.Errorf("nri.%s %q must be an absolute path", p.key, p.path)
		}
	}
	if n.RegistrationTimeout <= 0 || n.RequestTimeout <= 0 {
		return fmt.Errorf("nri.registration_timeout and nri.request_timeout must be positive")
	}
	return nil
}
