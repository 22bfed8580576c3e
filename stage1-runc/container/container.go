// Package container is runclet's glue to runc's libcontainer, and the only
// package in the project that imports it. It turns a bundle stage0 wrote
// into a libcontainer container whose state lives in a runc-compatible
// state root, so `runc --root <run root>/runc list|state|ps` sees runclet's
// apps.
package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	_ "github.com/opencontainers/cgroups/devices" // device rules for cgroup v1 and v2 (eBPF)
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // the C part of `init`, run before the Go runtime starts
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	ocispec "github.com/runclet/runclet/spec"
)

// MaybeInit runs libcontainer's container init when this binary was
// re-executed as `<self> init`; it does not return then. main's init()
// calls it first thing: libcontainer clones the binary it runs in.
func MaybeInit() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

// Stdio is what the app's process gets as stdin, stdout and stderr. Files
// are handed to the process as they are (no copying goroutine in between).
type Stdio struct {
	Stdin          *os.File // nil: /dev/null
	Stdout, Stderr *os.File
	// ConsoleSocket, when set, receives the pty master from the
	// container's init (process.terminal = true); Stdin/Stdout/Stderr are
	// then ignored.
	ConsoleSocket *os.File
}

// App is one libcontainer container with its init process.
type App struct {
	c    *libcontainer.Container
	p    *libcontainer.Process
	spec *specs.Spec

	waitOnce sync.Once
	state    *os.ProcessState
	waitErr  error

	// cgMu serializes Stats and Update: libcontainer's Stats reads the
	// configuration that Set replaces, without its lock.
	cgMu sync.Mutex

	oom *oomWatch // cgroup v2: OOM kills counted while the app runs
}

// Options are per-supervisor settings.
type Options struct {
	StateRoot     string // libcontainer state root (runc --root)
	SystemdCgroup bool
}

// Create creates the container and its init process, which then waits,
// as after `runc create`, until Start.
func Create(opts Options, id, bundle string, stdio Stdio) (_ *App, retErr error) {
	spec, err := readSpec(bundle)
	if err != nil {
		return nil, err
	}
	if spec.Process == nil {
		return nil, errdefs.InvalidArgument("bundle %s: no process", bundle)
	}
	if err := clamp(bundle, spec); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.StateRoot, 0o700); err != nil {
		return nil, err
	}
	cfg, err := libcontainerConfig(id, spec, opts.SystemdCgroup)
	if err != nil {
		return nil, errdefs.InvalidArgument("bundle %s: %w", bundle, err)
	}
	setBundleLabel(cfg, bundle)
	c, err := libcontainer.Create(opts.StateRoot, id, cfg)
	if err != nil {
		if errors.Is(err, libcontainer.ErrExist) {
			return nil, errdefs.AlreadyExists("container %s: %w", id, err)
		}
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	defer func() {
		if retErr != nil {
			c.Destroy()
		}
	}()
	p := newProcess(spec.Process)
	p.Init = true
	if stdio.ConsoleSocket != nil {
		p.ConsoleSocket = stdio.ConsoleSocket
	} else {
		p.Stdout, p.Stderr = stdio.Stdout, stdio.Stderr
		if stdio.Stdin != nil {
			p.Stdin = stdio.Stdin
		}
	}
	if err := c.Start(p); err != nil {
		return nil, explainStartError(id, spec.Process.Args, err)
	}
	return &App{c: c, p: p, spec: spec}, nil
}

func readSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, errdefs.InvalidArgument("bundle %s: %w", bundle, err)
	}
	defer f.Close()
	var s specs.Spec
	if err := jsonDecode(f, &s); err != nil {
		return nil, errdefs.InvalidArgument("bundle %s: config.json: %w", bundle, err)
	}
	if s.Root == nil || !filepath.IsAbs(s.Root.Path) {
		// specconv resolves a relative root against the working
		// directory, which a supervisor of many apps cannot chdir for.
		if s.Root == nil {
			s.Root = &specs.Root{Path: "rootfs"}
		}
		s.Root.Path = filepath.Join(bundle, s.Root.Path)
	}
	return &s, nil
}

func libcontainerConfig(id string, spec *specs.Spec, systemd bool) (*configs.Config, error) {
	return specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:       id,
		UseSystemdCgroup: systemd,
		Spec:             spec,
	})
}

// setBundleLabel records the real bundle directory: specconv takes the
// working directory (runc runs in the bundle; a supervisor of many apps
// cannot), and `runc exec`/`runc state` read the bundle from this label.
func setBundleLabel(cfg *configs.Config, bundle string) {
	for i, l := range cfg.Labels {
		if strings.HasPrefix(l, "bundle=") {
			cfg.Labels[i] = "bundle=" + bundle
			return
		}
	}
	cfg.Labels = append(cfg.Labels, "bundle="+bundle)
}

// newProcess is the part of the app's process specconv leaves to its
// caller (as runc's own newProcess): capabilities, no_new_privs, the
// SELinux label and oom_score_adj are in the container's configuration.
func newProcess(p *specs.Process) *libcontainer.Process {
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		AppArmorProfile: p.ApparmorProfile,
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	for _, r := range p.Rlimits {
		if t, ok := rlimitTypes[r.Type]; ok {
			lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: t, Hard: r.Hard, Soft: r.Soft})
		}
	}
	if p.ConsoleSize != nil {
		lp.ConsoleWidth, lp.ConsoleHeight = uint16(p.ConsoleSize.Width), uint16(p.ConsoleSize.Height)
	}
	return lp
}

var rlimitTypes = map[string]int{
	"RLIMIT_CPU": unix.RLIMIT_CPU, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_DATA": unix.RLIMIT_DATA,
	"RLIMIT_STACK": unix.RLIMIT_STACK, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
}

// clamp applies what this host allows to the app's process (see
// clampOOMScoreAdj, clampCapabilities) and, when that changed the spec,
// writes it back to the bundle: config.json says what runs, for `runc
// run -b`, status and stage0.
func clamp(bundle string, s *specs.Spec) error {
	oom := clampOOMScoreAdj(s)
	if caps := clampCapabilities(s.Process); !oom && !caps {
		return nil
	}
	if err := ocispec.WriteBundle(bundle, s); err != nil {
		return fmt.Errorf("bundle %s: writing back what this host allows: %w", bundle, err)
	}
	return nil
}

var oomClampLog sync.Once

// clampOOMScoreAdj raises a requested oom_score_adj to this process's own
// when it is lower: lowering needs CAP_SYS_RESOURCE, which root lacks on
// many VMs, and libcontainer then fails with an unhelpful pipe error.
// containerd's restrict_oom_score_adj does the same.
func clampOOMScoreAdj(spec *specs.Spec) bool {
	if spec.Process.OOMScoreAdj == nil {
		return false
	}
	cur, err := currentOOMScoreAdj()
	if err != nil || *spec.Process.OOMScoreAdj >= cur || hasCapSysResource() {
		return false
	}
	oomClampLog.Do(func() {
		fmt.Fprintf(os.Stderr, "stage1-runc: oom_score_adj %d raised to %d: this process may not lower it (no CAP_SYS_RESOURCE)\n", *spec.Process.OOMScoreAdj, cur)
	})
	v := cur
	spec.Process.OOMScoreAdj = &v
	return true
}

func currentOOMScoreAdj() (int, error) {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func hasCapSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

// explainStartError turns libcontainer's start failures into messages
// that name the cause a person can act on.
func explainStartError(id string, args []string, err error) error {
	msg := err.Error()
	arg0 := ""
	if len(args) > 0 {
		arg0 = args[0]
	}
	switch {
	case strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file or directory") && strings.Contains(msg, "exec:"):
		return errdefs.InvalidArgument("app %s: exec: %q: not found in the image: %w", id, arg0, err)
	case strings.Contains(msg, "permission denied") && strings.Contains(msg, "exec"):
		return errdefs.InvalidArgument("app %s: exec: %q: permission denied: %w", id, arg0, err)
	case strings.Contains(msg, "can't get final child's PID from pipe"):
		return fmt.Errorf("app %s: the container's init died before reporting (often a namespace, cgroup or oom_score_adj the kernel refused; see the supervisor log): %w", id, err)
	}
	return fmt.Errorf("app %s: %w", id, err)
}

// Start lets the created process exec the app, like `runc start`.
func (a *App) Start() error {
	if st, err := a.c.State(); err == nil {
		if p, ok := st.CgroupPaths[""]; ok {
			a.oom = watchOOM(filepath.Join(p, "memory.events"))
		}
	}
	if err := a.c.Exec(); err != nil {
		return fmt.Errorf("start %s: %w", a.c.ID(), err)
	}
	return nil
}

// Pid is the app's init process.
func (a *App) Pid() int {
	pid, _ := a.p.Pid()
	return pid
}

// Wait waits for the app's init process to exit; callable many times.
func (a *App) Wait() (*os.ProcessState, error) {
	a.waitOnce.Do(func() { a.state, a.waitErr = a.p.Wait() })
	return a.state, a.waitErr
}

// Signal signals the app's init. With all, every process in the app's
// cgroup gets it (needed when the app shares a pid namespace: killing its
// init does not end the others).
func (a *App) Signal(sig syscall.Signal, all bool) error {
	if all {
		return a.c.Signal(sig) // libcontainer signals the whole cgroup for SIGKILL without a private pid ns
	}
	return a.p.Signal(sig)
}

// OOMKilled reports whether the kernel OOM-killed a process of the app,
// from the cgroup's counters; call it before Destroy.
func (a *App) OOMKilled() bool {
	if a.oom.count() > 0 {
		return true
	}
	st, err := a.c.State()
	if err != nil {
		return false
	}
	if p, ok := st.CgroupPaths["memory"]; ok {
		return oomKills(filepath.Join(p, "memory.oom_control")) > 0
	}
	if p, ok := st.CgroupPaths[""]; ok {
		return oomKills(filepath.Join(p, "memory.events")) > 0
	}
	return false
}

func oomKills(file string) uint64 {
	kv, _ := fsutil.ReadKeyValues(file)
	return kv["oom_kill"]
}

// Destroy kills whatever is left of the app and removes its cgroup and
// libcontainer state.
func (a *App) Destroy() error {
	a.oom.close()
	if err := a.c.Destroy(); err != nil {
		return fmt.Errorf("destroy %s: %w", a.c.ID(), err)
	}
	return nil
}

// NewConsoleSocket returns a socket pair for receiving a pty master from
// the container: the first end is handed to Create, the second read with
// RecvConsole.
func NewConsoleSocket() (parent, child *os.File, err error) {
	return utils.NewSockPair("console")
}

// RecvConsole receives the pty master the container's init sends.
func RecvConsole(parent *os.File) (*os.File, error) {
	return utils.RecvFile(parent)
}
