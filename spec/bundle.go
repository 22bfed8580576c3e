package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	rfc2119 "github.com/opencontainers/runtime-tools/error"
	"github.com/opencontainers/runtime-tools/specerror"
	"github.com/opencontainers/runtime-tools/validate"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

// ConfigName is the spec's file name in a bundle.
const ConfigName = "config.json"

// WriteBundle writes s to dir/config.json atomically: a temporary file in
// dir is written, synced and renamed over config.json, then dir is synced,
// so a crash leaves either the old or the new spec, never a torn one. The
// file is 0600: it can hold secrets from the environment. When Root.Path is
// the bundle's "rootfs", the mount point is created too.
func WriteBundle(dir string, s *specs.Spec) error {
	if s == nil {
		return errdefs.InvalidArgument("write bundle %s: nil spec", dir)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode spec for bundle %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bundle %s: %w", dir, err)
	}
	if rootfs := bundleRootfs(dir, s); rootfs != "" {
		if err := os.MkdirAll(rootfs, 0o755); err != nil {
			return fmt.Errorf("create rootfs mount point: %w", err)
		}
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, ConfigName), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write bundle %s: %w", dir, err)
	}
	return nil
}

// bundleRootfs returns the rootfs mount point WriteBundle creates, or "".
func bundleRootfs(dir string, s *specs.Spec) string {
	if s.Root == nil {
		return ""
	}
	p := s.Root.Path
	if p == DefaultRootfs || p == "./"+DefaultRootfs || filepath.Clean(p) == filepath.Join(filepath.Clean(dir), DefaultRootfs) {
		return filepath.Join(dir, DefaultRootfs)
	}
	return ""
}

// ReadBundle reads dir/config.json. A missing file is errdefs.NotFound and
// one that does not decode is errdefs.InvalidArgument.
func ReadBundle(dir string) (*specs.Spec, error) {
	name := filepath.Join(dir, ConfigName)
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errdefs.NotFound("bundle %s has no %s: %w", dir, ConfigName, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, errdefs.InvalidArgument("bundle %s: decode %s: %w", dir, ConfigName, err)
	}
	return &s, nil
}

// Validate checks the bundle in dir with runtime-tools' validator, without
// host-specific checks, and returns errdefs.InvalidArgument listing every
// problem.
//
// runtime-tools v0.9.0 is stricter than runc in places and wrong in a few,
// so some fields are checked here instead and blanked in the copy it sees:
//   - joined namespaces (a path) count as present for runc but runtime-tools
//     only honours new ones for the hostname and net sysctls;
//   - environment names: it allows only letters, digits and '_', while
//     Kubernetes allows names like "my.var";
//   - device nodes: it rejects minor number 0 (/dev/tty, /dev/sda);
//   - the AppArmor profile: it looks for the profile inside the rootfs;
//   - mount destinations: its mount check only logs a warning per call.
//
// SHOULD-level advice (e.g. annotation naming) is dropped, and the JSON
// schema is not checked because runtime-tools fetches it over the network.
func Validate(dir string) error {
	s, err := ReadBundle(dir)
	if err != nil {
		return err
	}
	problems := ownChecks(s)
	blankForRuntimeTools(s)
	v, err := validate.NewValidator(s, dir, false, "linux")
	if err != nil {
		return fmt.Errorf("validate bundle %s: %w", dir, err)
	}
	for _, check := range []func() error{
		v.CheckPlatform, v.CheckRoot, v.CheckMandatoryFields, v.CheckSemVer,
		v.CheckProcess, v.CheckLinux, v.CheckAnnotations, v.CheckHooks,
	} {
		problems = append(problems, mustLevel(check())...)
	}
	if len(problems) > 0 {
		return errdefs.InvalidArgument("bundle %s is not a valid OCI bundle: %s", dir, strings.Join(problems, "; "))
	}
	return nil
}

// ownChecks checks the fields hidden from runtime-tools.
func ownChecks(s *specs.Spec) []string {
	var out []string
	if s.Process != nil {
		for _, kv := range s.Process.Env {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				out = append(out, fmt.Sprintf("env %q is not KEY=VALUE", kv))
			}
		}
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Destination) {
			out = append(out, fmt.Sprintf("mount destination %q is not absolute", m.Destination))
		}
	}
	if s.Linux == nil {
		return out
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" && !filepath.IsAbs(ns.Path) {
			out = append(out, fmt.Sprintf("%s namespace path %q is not absolute", ns.Type, ns.Path))
		}
	}
	seen := map[string]bool{}
	for _, d := range s.Linux.Devices {
		switch {
		case !filepath.IsAbs(d.Path):
			out = append(out, fmt.Sprintf("device path %q is not absolute", d.Path))
		case seen[d.Path]:
			out = append(out, fmt.Sprintf("device %s is listed twice", d.Path))
		case d.Type != "c" && d.Type != "b" && d.Type != "u" && d.Type != "p":
			out = append(out, fmt.Sprintf("device %s has invalid type %q", d.Path, d.Type))
		case d.Major < 0 || d.Minor < 0:
			out = append(out, fmt.Sprintf("device %s has a negative number", d.Path))
		}
		seen[d.Path] = true
	}
	return out
}

// blankForRuntimeTools removes from s what ownChecks covers (see Validate).
func blankForRuntimeTools(s *specs.Spec) {
	s.Mounts = nil
	if s.Process != nil {
		s.Process.Env = nil
		s.Process.ApparmorProfile = ""
	}
	if s.Linux != nil {
		s.Linux.Devices = nil
		for i := range s.Linux.Namespaces {
			s.Linux.Namespaces[i].Path = ""
		}
	}
}

// mustLevel flattens runtime-tools' multierrors and keeps the messages of
// everything but RFC 2119 SHOULD/MAY-level findings.
func mustLevel(err error) []string {
	if err == nil {
		return nil
	}
	if multi, ok := err.(interface{ WrappedErrors() []error }); ok {
		var out []string
		for _, e := range multi.WrappedErrors() {
			out = append(out, mustLevel(e)...)
		}
		return out
	}
	var se *specerror.Error
	if errors.As(err, &se) && se.Err.Level < rfc2119.Must {
		return nil
	}
	return []string{err.Error()}
}
