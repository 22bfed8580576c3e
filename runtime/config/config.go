// Package config is runclet's one configuration file. The defaults live in
// default.toml, embedded: it is both what `runclet config default` prints
// and the base every loaded file is decoded over, so the two cannot drift.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/runclet/runclet/runtime/errdefs"
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
	Registries map[string]Registry `toml:"registries"`
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
}

// Image tunes the image store.
type Image struct {
	MaxConcurrentDownloads int `toml:"max_concurrent_downloads"`
}

// Registry is what runclet knows about one registry host.
type Registry struct {
	// Mirrors are endpoints ("http://127.0.0.1:5000", "https://mirror.example")
	// tried in order before the host itself; each serves the same repository
	// paths. A mirror without a scheme is spoken to over HTTPS.
	Mirrors []string `toml:"mirrors"`
	// Insecure allows plain HTTP and unverified TLS for this host.
	Insecure bool `toml:"insecure"`
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
	if c.Cgroup.Driver != "cgroupfs" && c.Cgroup.Driver != "systemd" {
		return errdefs.InvalidArgument("config %s: cgroup.driver %q: want cgroupfs or systemd", source, c.Cgroup.Driver)
	}
	if c.Stage1.DefaultFlavor != "runc" && c.Stage1.DefaultFlavor != "fly" {
		return errdefs.InvalidArgument("config %s: stage1.default_flavor %q: want runc or fly", source, c.Stage1.DefaultFlavor)
	}
	if c.Log.MaxLineSize < 1024 {
		return errdefs.InvalidArgument("config %s: log.max_line_size must be at least 1024", source)
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
