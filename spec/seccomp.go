package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// targetArch is the GOARCH whose seccomp architectures and arch-specific
// syscalls profiles are built for. It is a variable so tests can produce the
// same golden files on every machine.
var targetArch = runtime.GOARCH

// DefaultSeccomp returns the RuntimeDefault profile for an app with the
// default capabilities on this machine's architecture.
func DefaultSeccomp() *specs.LinuxSeccomp {
	return buildProfile(runtimeDefaultRules, specs.ActErrno, errnoEPERM, targetArch, defaultCapabilities)
}

// ruleApplies reports whether r is part of the filter for goarch and caps.
func ruleApplies(r seccompRule, goarch string, caps []string) bool {
	if r.arches != nil && !slices.Contains(r.arches, goarch) {
		return false
	}
	if slices.Contains(r.notArches, goarch) {
		return false
	}
	for _, c := range r.caps {
		if !slices.Contains(caps, c) {
			return false
		}
	}
	return !slices.ContainsFunc(r.notCaps, func(c string) bool { return slices.Contains(caps, c) })
}

// buildProfile evaluates rules for an architecture and a bounding set.
// defaultErrno is the errno of the default action (0: none).
func buildProfile(rules []seccompRule, defaultAction specs.LinuxSeccompAction, defaultErrno uint, goarch string, caps []string) *specs.LinuxSeccomp {
	s := &specs.LinuxSeccomp{
		DefaultAction: defaultAction,
		Architectures: slices.Clone(seccompArches[goarch]),
	}
	if defaultErrno != 0 {
		e := defaultErrno
		s.DefaultErrnoRet = &e
	}
	for _, r := range rules {
		if !ruleApplies(r, goarch, caps) {
			continue
		}
		sc := specs.LinuxSyscall{Names: slices.Clone(r.names), Action: r.action, Args: slices.Clone(r.args)}
		if r.errno != 0 {
			e := r.errno
			sc.ErrnoRet = &e
		}
		s.Syscalls = append(s.Syscalls, sc)
	}
	return s
}

// seccompFor returns the app's seccomp filter: none for privileged apps (as
// in containerd) and for Unconfined, the RuntimeDefault profile evaluated for
// the app's capabilities, or a profile file from the host.
func seccompFor(app App, caps []string) (*specs.LinuxSeccomp, error) {
	if app.Privileged {
		return nil, nil
	}
	switch app.Seccomp.Kind {
	case "", SeccompRuntimeDefault:
		return buildProfile(runtimeDefaultRules, specs.ActErrno, errnoEPERM, targetArch, caps), nil
	case SeccompUnconfined:
		return nil, nil
	case SeccompLocalhost:
		return loadLocalhostProfile(app.Seccomp.LocalhostPath, targetArch, caps)
	default:
		return nil, errdefs.InvalidArgument("unknown seccomp profile kind %q", app.Seccomp.Kind)
	}
}

// profileFile is a seccomp profile on disk: the runtime-spec's LinuxSeccomp,
// or Docker's format, which adds an architecture map and conditional
// syscalls. Kubernetes users commonly start from Docker's default profile.
type profileFile struct {
	DefaultAction    specs.LinuxSeccompAction `json:"defaultAction"`
	DefaultErrnoRet  *uint                    `json:"defaultErrnoRet"`
	Architectures    []specs.Arch             `json:"architectures"`
	ArchMap          []profileArch            `json:"archMap"`
	Flags            []specs.LinuxSeccompFlag `json:"flags"`
	ListenerPath     string                   `json:"listenerPath"`
	ListenerMetadata string                   `json:"listenerMetadata"`
	Syscalls         []profileSyscall         `json:"syscalls"`
}

type profileArch struct {
	Arch      specs.Arch   `json:"architecture"`
	SubArches []specs.Arch `json:"subArchitectures"`
}

type profileSyscall struct {
	Name     string                   `json:"name"` // Docker's old single-name form
	Names    []string                 `json:"names"`
	Action   specs.LinuxSeccompAction `json:"action"`
	ErrnoRet *uint                    `json:"errnoRet"`
	Args     []specs.LinuxSeccompArg  `json:"args"`
	Includes *profileFilter           `json:"includes"`
	Excludes *profileFilter           `json:"excludes"`
}

// profileFilter is Docker's condition on a syscall entry. MinKernel is
// accepted and treated as met: Generate does not look at the host kernel.
type profileFilter struct {
	Caps      []string `json:"caps"`
	Arches    []string `json:"arches"`
	MinKernel string   `json:"minKernel"`
}

// loadLocalhostProfile reads a profile from the host and evaluates it for an
// architecture and capability set.
func loadLocalhostProfile(path, goarch string, caps []string) (*specs.LinuxSeccomp, error) {
	if !filepath.IsAbs(path) {
		return nil, errdefs.InvalidArgument("seccomp profile path %q is not absolute", path)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errdefs.NotFound("seccomp profile %s: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read seccomp profile: %w", err)
	}
	var p profileFile
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, errdefs.InvalidArgument("seccomp profile %s: %w", path, err)
	}
	return p.evaluate(path, goarch, caps)
}

func (p *profileFile) evaluate(path, goarch string, caps []string) (*specs.LinuxSeccomp, error) {
	if p.DefaultAction == "" {
		return nil, errdefs.InvalidArgument("seccomp profile %s has no defaultAction", path)
	}
	if len(p.Architectures) > 0 && len(p.ArchMap) > 0 {
		return nil, errdefs.InvalidArgument("seccomp profile %s has both architectures and archMap", path)
	}
	s := &specs.LinuxSeccomp{
		DefaultAction:    p.DefaultAction,
		DefaultErrnoRet:  p.DefaultErrnoRet,
		Architectures:    p.Architectures,
		Flags:            p.Flags,
		ListenerPath:     p.ListenerPath,
		ListenerMetadata: p.ListenerMetadata,
	}
	native := seccompArches[goarch]
	for _, a := range p.ArchMap {
		if len(native) > 0 && a.Arch == native[0] {
			s.Architectures = append([]specs.Arch{a.Arch}, a.SubArches...)
		}
	}
	for i, sc := range p.Syscalls {
		names := sc.Names
		if sc.Name != "" {
			names = append([]string{sc.Name}, names...)
		}
		if len(names) == 0 {
			return nil, errdefs.InvalidArgument("seccomp profile %s: syscall entry %d has no names", path, i)
		}
		if !sc.applies(goarch, caps) {
			continue
		}
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: names, Action: sc.Action, ErrnoRet: sc.ErrnoRet, Args: sc.Args})
	}
	return s, nil
}

// applies follows Docker: every included capability must be held and the
// architecture listed; any excluded capability or architecture drops it.
func (sc profileSyscall) applies(goarch string, caps []string) bool {
	r := seccompRule{}
	if sc.Includes != nil {
		r.caps, r.arches = sc.Includes.Caps, nilIfEmpty(sc.Includes.Arches)
	}
	if sc.Excludes != nil {
		r.notCaps, r.notArches = sc.Excludes.Caps, sc.Excludes.Arches
	}
	return ruleApplies(r, goarch, caps)
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
