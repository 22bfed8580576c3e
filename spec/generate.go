package spec

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// Annotations runclet adds to every spec, so a bundle on disk (or `runc
// state`) says which pod and app it belongs to.
const (
	AnnotationPodID   = "org.runclet.pod.id"
	AnnotationAppName = "org.runclet.app.name"
)

// DefaultPath is $PATH when neither the image nor the app sets one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DefaultRootfs is Root.Path when the app gives none: "rootfs" in the bundle.
const DefaultRootfs = "rootfs"

// nameRE is the rule for pod and app names: Docker's container-name
// alphabet. Kubernetes' own names (DNS labels and subdomains) all match, and
// so do the mixed-case names CRI clients such as critest use. Names are
// labels only: paths, cgroups and unit names use ids, never names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// NameMax is the longest pod or app name accepted (a DNS subdomain's limit).
const NameMax = 253

// podIDRE keeps pod ids usable in cgroup paths and systemd unit names.
var podIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// CheckName reports whether name (of the kind what: "pod name", "app name")
// is usable: letters, digits, '_', '.' and '-', starting with a letter or
// digit, at most NameMax bytes.
func CheckName(what, name string) error {
	if len(name) > NameMax || !nameRE.MatchString(name) {
		return errdefs.InvalidArgument("%s %.260q is not valid (letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d bytes)", what, name, NameMax)
	}
	return nil
}

func checkPod(pod Pod) error {
	if !podIDRE.MatchString(pod.ID) || pod.ID == "." || pod.ID == ".." || len(pod.ID) > 128 {
		return errdefs.InvalidArgument("pod id %q is not usable (letters, digits, '_', '.', '-', at most 128)", pod.ID)
	}
	for _, f := range []struct{ what, path string }{
		{"resolv.conf", pod.ResolvConfPath}, {"hosts", pod.HostsPath},
		{"hostname", pod.HostnamePath}, {"shm", pod.ShmPath},
	} {
		if f.path != "" && !path.IsAbs(f.path) {
			return errdefs.InvalidArgument("pod %s: %s path %q is not absolute", pod.ID, f.what, f.path)
		}
	}
	return nil
}

func checkFlavor(f Flavor) (Flavor, error) {
	switch f {
	case "":
		return FlavorRunc, nil
	case FlavorRunc, FlavorFly:
		return f, nil
	}
	return "", errdefs.InvalidArgument("unknown stage1 flavor %q", f)
}

// processArgs applies Docker's and Kubernetes' rules: a command replaces
// ENTRYPOINT and drops CMD; args alone replace CMD; otherwise ENTRYPOINT
// followed by CMD.
func processArgs(img ocispec.ImageConfig, app App) ([]string, error) {
	var args []string
	switch {
	case len(app.Command) > 0:
		args = append(slices.Clone(app.Command), app.Args...)
	case len(app.Args) > 0:
		args = append(slices.Clone(img.Entrypoint), app.Args...)
	default:
		args = append(slices.Clone(img.Entrypoint), img.Cmd...)
	}
	if len(args) == 0 || args[0] == "" {
		return nil, errdefs.InvalidArgument("no command specified for app %q: the image has no ENTRYPOINT or CMD and the app sets no command", app.Name)
	}
	return args, nil
}

// envList is an ordered environment where a later Set replaces an earlier
// value in place, so the image's order is kept.
type envList struct {
	entries []string
	index   map[string]int
}

func (e *envList) set(kv string) error {
	key, _, ok := strings.Cut(kv, "=")
	if !ok || key == "" || strings.ContainsRune(kv, 0) {
		return errdefs.InvalidArgument("environment entry %q is not KEY=VALUE", kv)
	}
	if e.index == nil {
		e.index = map[string]int{}
	}
	if i, ok := e.index[key]; ok {
		e.entries[i] = kv
		return nil
	}
	e.index[key] = len(e.entries)
	e.entries = append(e.entries, kv)
	return nil
}

func (e *envList) has(key string) bool {
	_, ok := e.index[key]
	return ok
}

// processEnv builds the environment: a default PATH and the pod's HOSTNAME,
// overridden by the image's Env, overridden by the app's; TERM=xterm for a
// terminal unless something set TERM.
func processEnv(img ocispec.ImageConfig, app App, pod Pod) ([]string, error) {
	var env envList
	base := []string{"PATH=" + DefaultPath}
	if pod.Hostname != "" {
		base = append(base, "HOSTNAME="+pod.Hostname)
	}
	for _, list := range [][]string{base, img.Env, app.Env} {
		for _, kv := range list {
			if err := env.set(kv); err != nil {
				return nil, err
			}
		}
	}
	if app.Terminal && !env.has("TERM") {
		_ = env.set("TERM=xterm")
	}
	return env.entries, nil
}

// workingDir is the app's, else the image's, else "/". A relative image
// WORKDIR (accepted by old Docker versions) is taken from the root.
func workingDir(img ocispec.ImageConfig, app App) (string, error) {
	if app.WorkingDir != "" {
		return cleanContainerPath("working directory", app.WorkingDir)
	}
	if img.WorkingDir != "" {
		return path.Join("/", img.WorkingDir), nil
	}
	return "/", nil
}

// annotations copies the app's annotations and adds runclet's, which win.
func annotations(app App, pod Pod) map[string]string {
	out := maps.Clone(app.Annotations)
	if out == nil {
		out = map[string]string{}
	}
	out[AnnotationPodID] = pod.ID
	out[AnnotationAppName] = app.Name
	return out
}

// checkRlimits refuses what runc would refuse later: a soft limit above the
// hard one and the same limit twice.
func checkRlimits(rl []specs.POSIXRlimit) ([]specs.POSIXRlimit, error) {
	seen := map[string]bool{}
	for _, r := range rl {
		if !strings.HasPrefix(r.Type, "RLIMIT_") {
			return nil, errdefs.InvalidArgument("rlimit type %q does not start with RLIMIT_", r.Type)
		}
		if seen[r.Type] {
			return nil, errdefs.InvalidArgument("rlimit %s is given twice", r.Type)
		}
		seen[r.Type] = true
		if r.Soft > r.Hard {
			return nil, errdefs.InvalidArgument("rlimit %s: soft limit %d is above hard limit %d", r.Type, r.Soft, r.Hard)
		}
	}
	return slices.Clone(rl), nil
}

// Generate builds the OCI runtime spec for one app of a pod. img is the
// image's config and files reads the image's /etc/passwd and /etc/group.
// Errors from bad requests are errdefs.InvalidArgument; a missing Localhost
// seccomp profile is errdefs.NotFound.
func Generate(img ocispec.ImageConfig, files ImageFiles, app App, pod Pod, flavor Flavor) (*specs.Spec, error) {
	flavor, err := checkFlavor(flavor)
	if err != nil {
		return nil, err
	}
	if err := CheckName("app name", app.Name); err != nil {
		return nil, err
	}
	if err := checkPod(pod); err != nil {
		return nil, err
	}
	s := &specs.Spec{
		Version:     specs.Version,
		Root:        &specs.Root{Path: app.RootfsPath, Readonly: app.ReadonlyRootfs},
		Annotations: annotations(app, pod),
		Linux:       &specs.Linux{},
	}
	if s.Root.Path == "" {
		s.Root.Path = DefaultRootfs
	}
	if s.Process, err = process(img, files, app, pod); err != nil {
		return nil, fmt.Errorf("app %s: %w", app.Name, err)
	}
	if err := linux(s, app, pod, flavor); err != nil {
		return nil, fmt.Errorf("app %s: %w", app.Name, err)
	}
	return s, nil
}

// process fills everything about the app's process but its seccomp filter.
func process(img ocispec.ImageConfig, files ImageFiles, app App, pod Pod) (*specs.Process, error) {
	p := &specs.Process{
		Terminal:        app.Terminal,
		NoNewPrivileges: app.NoNewPrivs,
		ApparmorProfile: app.ApparmorProfile,
		OOMScoreAdj:     app.Resources.OOMScoreAdj,
	}
	var err error
	if p.Args, err = processArgs(img, app); err != nil {
		return nil, err
	}
	if p.Env, err = processEnv(img, app, pod); err != nil {
		return nil, err
	}
	if p.Cwd, err = workingDir(img, app); err != nil {
		return nil, err
	}
	if p.User, err = resolveUser(img, files, app); err != nil {
		return nil, err
	}
	caps, err := computeCaps(app)
	if err != nil {
		return nil, err
	}
	p.Capabilities = capabilitySets(caps)
	if p.Rlimits, err = checkRlimits(app.Rlimits); err != nil {
		return nil, err
	}
	return p, nil
}

// linux fills the Linux section and the mounts.
func linux(s *specs.Spec, app App, pod Pod, flavor Flavor) error {
	l := s.Linux
	var err error
	if l.Namespaces, l.UIDMappings, l.GIDMappings, err = namespaces(pod, flavor); err != nil {
		return err
	}
	if s.Hostname, err = hostname(pod, flavor); err != nil {
		return err
	}
	if s.Mounts, l.RootfsPropagation, err = buildMounts(app, pod, podIsolation(pod, flavor)); err != nil {
		return err
	}
	if l.MaskedPaths, l.ReadonlyPaths, err = maskedAndReadonly(app); err != nil {
		return err
	}
	if l.Seccomp, err = seccompFor(app, s.Process.Capabilities.Bounding); err != nil {
		return err
	}
	if l.Sysctl, err = mergeSysctls(app, pod, podIsolation(pod, flavor)); err != nil {
		return err
	}
	if l.CgroupsPath, err = cgroupsPath(app, pod); err != nil {
		return err
	}
	if l.Resources, err = LinuxResources(app.Resources); err != nil {
		return err
	}
	l.Devices, l.Resources.Devices, err = devices(app)
	return err
}
