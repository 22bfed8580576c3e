package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/tty/crilog"
)

// podFlags are the options of a pod (runclet run, app sandbox).
type podFlags struct {
	name, hostname, flavor, net string
	ports, labels               []string
	sharePID                    bool
}

func (f *podFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.name, "name", "", "pod name (default runclet-<id>)")
	c.Flags().StringVar(&f.hostname, "hostname", "", "pod hostname (default: the pod name)")
	c.Flags().StringVar(&f.flavor, "stage1", "", "stage1 flavor: runc (isolated) or fly (host namespaces)")
	c.Flags().StringVar(&f.net, "net", "default", "network: default (CNI) or host")
	c.Flags().StringSliceVarP(&f.ports, "port", "p", nil, "publish [[HOSTIP:]HOSTPORT:]PORT[/tcp|udp|sctp]; without HOSTPORT a free one (repeatable)")
	c.Flags().BoolVar(&f.sharePID, "share-pid", false, "one pid namespace for all the pod's apps")
}

func (f *podFlags) config() (pod.PodConfig, error) {
	cfg := pod.PodConfig{Name: f.name, Hostname: f.hostname, Flavor: f.flavor, SharePID: f.sharePID}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return cfg, err
	}
	cfg.Labels = labels
	switch f.net {
	case "default", "":
	case "host":
		cfg.HostNetwork = true
	default:
		return cfg, errdefs.InvalidArgument("--net %q: want default or host", f.net)
	}
	if cfg.HostNetwork && len(f.ports) > 0 {
		return cfg, errdefs.InvalidArgument("--net host with --port %s: an app on the host's network listens on the host's ports itself; drop --port", strings.Join(f.ports, ","))
	}
	for _, p := range f.ports {
		pm, err := parsePort(p)
		if err != nil {
			return cfg, err
		}
		cfg.Ports = append(cfg.Ports, pm)
	}
	return cfg, nil
}

// parsePort reads -p [[HOSTIP:]HOSTPORT:]PORT[/PROTO]; without a host
// port one that is free now is picked (`runclet port` shows it).
func parsePort(s string) (network.PortMapping, error) {
	bad := errdefs.InvalidArgument("--port %q: want [[HOSTIP:]HOSTPORT:]PORT[/tcp|udp|sctp]", s)
	spec, proto, _ := strings.Cut(s, "/")
	parts := strings.Split(spec, ":")
	hostIP, host, ctr := "", "", parts[len(parts)-1]
	switch len(parts) {
	case 1:
	case 2:
		host = parts[0]
	case 3:
		hostIP, host = parts[0], parts[1]
		if net.ParseIP(hostIP) == nil {
			return network.PortMapping{}, bad
		}
	default:
		return network.PortMapping{}, bad
	}
	cp, err := strconv.ParseUint(ctr, 10, 16)
	if err != nil || cp == 0 {
		return network.PortMapping{}, bad
	}
	var hp uint64
	if host != "" {
		if hp, err = strconv.ParseUint(host, 10, 16); err != nil || hp == 0 {
			return network.PortMapping{}, bad
		}
	}
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return network.PortMapping{}, errdefs.InvalidArgument("--port %q: protocol must be tcp, udp or sctp", s)
	}
	if hp == 0 {
		p, err := freeHostPort(proto, hostIP)
		if err != nil {
			return network.PortMapping{}, fmt.Errorf("--port %q: picking a free host port: %w", s, err)
		}
		hp = uint64(p)
	}
	return network.PortMapping{Protocol: proto, HostIP: hostIP, HostPort: int32(hp), ContainerPort: int32(cp)}, nil
}

// freeHostPort asks the kernel for a port free now (sctp: a tcp one).
func freeHostPort(proto, ip string) (int, error) {
	if proto == "udp" {
		c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// appFlags are the options of an app (runclet run, app add).
type appFlags struct {
	name, user, workdir, memory, entrypoint string
	env, volumes, capAdd, capDrop           []string
	privileged, readonly                    bool
	pids                                    int64
	tmpfs                                   []string
	readonlyTmpfs                           bool
	envFiles, labels                        []string
	pull                                    string
	init                                    bool
}

func (f *appFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.user, "user", "", "user to run as: name, uid, name:group or uid:gid (default: the image's USER)")
	c.Flags().StringVarP(&f.workdir, "workdir", "w", "", "working directory (default: the image's)")
	c.Flags().StringVarP(&f.memory, "memory", "m", "", "memory limit, e.g. 64M or 1G")
	c.Flags().Int64Var(&f.pids, "pids-limit", 0, "maximum number of processes")
	c.Flags().StringVar(&f.entrypoint, "entrypoint", "", "override the image's entrypoint")
	c.Flags().StringArrayVarP(&f.env, "env", "e", nil, "environment KEY=VALUE, or KEY to pass runclet's own value (repeatable)")
	c.Flags().StringArrayVar(&f.envFiles, "env-file", nil, "read environment from a file of KEY=VALUE (or KEY) lines; # starts a comment (repeatable)")
	c.Flags().StringArrayVarP(&f.labels, "label", "l", nil, "label KEY=VALUE (repeatable)")
	c.Flags().StringVar(&f.pull, "pull", "missing", "pull the image: always, missing (when not in the store) or never")
	c.Flags().BoolVar(&f.init, "init", false, "run a tiny init (runclet-init, at /dev/init) as the app's first process: it reaps orphans and forwards signals")
	c.Flags().StringArrayVarP(&f.volumes, "volume", "v", nil, "bind mount HOSTPATH:PATH[:ro] (repeatable)")
	c.Flags().StringSliceVar(&f.capAdd, "cap-add", nil, "capabilities to add")
	c.Flags().StringSliceVar(&f.capDrop, "cap-drop", nil, "capabilities to drop")
	c.Flags().BoolVar(&f.privileged, "privileged", false, "all capabilities and devices, no seccomp")
	c.Flags().BoolVar(&f.readonly, "read-only", false, "read-only root filesystem, with a tmpfs on /tmp, /var/tmp and /run (see --read-only-tmpfs)")
	c.Flags().BoolVar(&f.readonlyTmpfs, "read-only-tmpfs", true, "with --read-only, mount a tmpfs on /tmp, /var/tmp and /run (--read-only-tmpfs=false: everything read-only)")
	c.Flags().StringArrayVar(&f.tmpfs, "tmpfs", nil, "mount a tmpfs at PATH[:OPTIONS], e.g. /cache:size=64m,mode=0700 (repeatable)")
}

// readonlyTmpfsMounts are the writable places an app on a read-only rootfs
// gets, as podman's --read-only-tmpfs gives them.
var readonlyTmpfsMounts = []spec.TmpfsMount{
	{ContainerPath: "/tmp", Options: []string{"nosuid", "nodev", "mode=1777"}},
	{ContainerPath: "/var/tmp", Options: []string{"nosuid", "nodev", "mode=1777"}},
	{ContainerPath: "/run", Options: []string{"nosuid", "nodev", "mode=755"}},
}

// parseTmpfs reads --tmpfs PATH[:OPTIONS]: nosuid and nodev always,
// mode=1777 unless OPTIONS sets a mode.
func parseTmpfs(v string) (spec.TmpfsMount, error) {
	dst, opts, _ := strings.Cut(v, ":")
	if !filepath.IsAbs(dst) {
		return spec.TmpfsMount{}, errdefs.InvalidArgument("--tmpfs %q: want an absolute PATH[:OPTIONS]", v)
	}
	m := spec.TmpfsMount{ContainerPath: filepath.Clean(dst), Options: []string{"nosuid", "nodev"}}
	mode := false
	for _, o := range strings.Split(opts, ",") {
		switch {
		case o == "":
		case strings.ContainsAny(o, " \t"):
			return spec.TmpfsMount{}, errdefs.InvalidArgument("--tmpfs %q: option %q", v, o)
		default:
			mode = mode || strings.HasPrefix(o, "mode=")
			m.Options = append(m.Options, o)
		}
	}
	if !mode {
		m.Options = append(m.Options, "mode=1777")
	}
	return m, nil
}

func (f *appFlags) config(img string, args []string) (pod.AppConfig, error) {
	cfg := pod.AppConfig{Name: f.name, Image: img}
	s := &cfg.Spec
	env, err := f.environment()
	if err != nil {
		return cfg, err
	}
	if cfg.Labels, err = parseLabels(f.labels); err != nil {
		return cfg, err
	}
	s.Args, s.Env, s.User, s.WorkingDir = args, env, f.user, f.workdir
	if f.entrypoint != "" {
		s.Command = []string{f.entrypoint}
	}
	s.CapAdd, s.CapDrop, s.Privileged, s.ReadonlyRootfs = f.capAdd, f.capDrop, f.privileged, f.readonly
	s.Resources.PidsLimit = f.pids
	if f.memory != "" {
		n, err := parseBytes(f.memory)
		if err != nil {
			return cfg, err
		}
		s.Resources.MemoryLimit = n
	}
	for _, v := range f.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || !filepath.IsAbs(parts[0]) || !filepath.IsAbs(parts[1]) || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			return cfg, errdefs.InvalidArgument("--volume %q: want HOSTPATH:PATH[:ro], both absolute", v)
		}
		// Checked here, before a pod exists, rather than met by the
		// container's init as a mount failure.
		if _, err := os.Stat(parts[0]); errors.Is(err, fs.ErrNotExist) {
			return cfg, errdefs.InvalidArgument("--volume %q: volume source %s does not exist", v, parts[0])
		} else if err != nil {
			return cfg, errdefs.InvalidArgument("--volume %q: volume source: %w", v, err)
		}
		s.Mounts = append(s.Mounts, spec.Mount{HostPath: parts[0], ContainerPath: parts[1], Readonly: len(parts) == 3 && parts[2] == "ro"})
	}
	taken := map[string]bool{}
	for _, m := range s.Mounts {
		taken[filepath.Clean(m.ContainerPath)] = true
	}
	for _, v := range f.tmpfs {
		m, err := parseTmpfs(v)
		if err != nil {
			return cfg, err
		}
		if taken[m.ContainerPath] {
			return cfg, errdefs.InvalidArgument("--tmpfs %q: %s is mounted twice", v, m.ContainerPath)
		}
		taken[m.ContainerPath] = true
		s.Tmpfs = append(s.Tmpfs, m)
	}
	if f.readonly && f.readonlyTmpfs {
		for _, m := range readonlyTmpfsMounts {
			if !taken[m.ContainerPath] { // the user's own mount there wins
				s.Tmpfs = append(s.Tmpfs, m)
			}
		}
	}
	if cfg.Name == "" {
		cfg.Name = appNameFromImage(img)
	}
	return cfg, nil
}

// appNameFromImage makes a DNS label from an image name, as rkt named
// apps after their image: "docker.io/library/busybox:1" → "busybox".
func appNameFromImage(img string) string {
	if ref, err := image.ParseReference(img); err == nil {
		img = ref.Path()
	}
	img = filepath.Base(img)
	var b strings.Builder
	for _, r := range strings.ToLower(img) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if n := strings.Trim(b.String(), "-"); n != "" {
		return n
	}
	return "app"
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	t := strings.ToLower(strings.TrimSuffix(strings.ToLower(s), "b"))
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, strings.TrimSuffix(t, "k")
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, strings.TrimSuffix(t, "m")
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, strings.TrimSuffix(t, "g")
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, errdefs.InvalidArgument("size %q: want a number with an optional k, m or g suffix", s)
	}
	return n * mult, nil
}

// ensureImage returns the image, pulling it when it is not in the store,
// as `docker run` and `rkt run` do.
func ensureImage(ctx context.Context, images *image.Store, ref string, out io.Writer, policy string) (image.Image, error) {
	img, err := images.Get(ref)
	switch policy {
	case "", "missing":
		if err == nil || !errdefs.IsNotFound(err) {
			return img, err
		}
	case "never":
		if errdefs.IsNotFound(err) {
			return img, errdefs.NotFound("image %q is not in the store and --pull=never", ref)
		}
		return img, err
	case "always":
	default:
		return img, errdefs.InvalidArgument("--pull %q: want always, missing or never", policy)
	}
	opts := image.PullOptions{}
	if p := newProgress(out, false); p != nil {
		opts.Progress = p.event
		defer p.finish()
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	img, err = images.Pull(ctx, ref, opts)
	return img, interruptedErr(ctx, "pull of "+ref, err)
}

func runCommand(g *globals) *cobra.Command {
	var pf podFlags
	var af appFlags
	var rm, detach, interactive, tty bool
	c := &cobra.Command{
		Use:   "run [flags] IMAGE [-- ARGS...]",
		Short: "Run a one-app pod; in the foreground it exits with the app's exit code",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, images, err := g.podManager()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			// Flags first: a bad one fails before a pull or a pod.
			pcfg, err := pf.config()
			if err != nil {
				return err
			}
			acfg, err := af.config(args[0], args[1:])
			if err != nil {
				return err
			}
			img, err := ensureImage(ctx, images, args[0], cmd.ErrOrStderr(), af.pull)
			if err != nil {
				return err
			}
			if err := af.applyInit(&acfg, images, img); err != nil {
				return err
			}
			acfg.Tty, acfg.Stdin, acfg.StdinOnce = tty, interactive, interactive
			pcfg.Labels = acfg.Labels // run's --label labels the pod and its app
			// rkt's run: the pod exits when its app has (detached too).
			pcfg.ExitWithApps = true
			p, err := m.CreatePod(ctx, pcfg)
			if err != nil {
				return err
			}
			a, err := m.AddApp(ctx, p.ID, acfg)
			if err == nil && (detach || !(interactive || tty)) {
				a, err = m.StartApp(ctx, p.ID, a.ID)
			}
			if err != nil {
				m.RemovePod(context.Background(), p.ID)
				return err
			}
			if detach {
				fmt.Fprintln(cmd.OutOrStdout(), p.ID)
				return nil
			}
			var code int
			if interactive || tty {
				code, err = runInteractive(ctx, m, a, interactive)
				if errors.Is(err, errDetached) {
					fmt.Fprintf(cmd.ErrOrStderr(), "detached; pod %s keeps running\n", p.ID)
					return nil
				}
				if err == nil {
					// The attach ends at exit; the exit file is the truth.
					code, err = waitExitCode(ctx, m, a)
				}
			} else {
				code, err = followApp(ctx, m, a, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			if err != nil {
				return err
			}
			if rm {
				err = m.RemovePod(context.Background(), p.ID)
			} else {
				err = m.ExitPod(context.Background(), p.ID)
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
	pf.add(c)
	af.add(c)
	c.Flags().StringVar(&af.name, "app-name", "", "app name (default: from the image name)")
	c.Flags().BoolVar(&rm, "rm", false, "remove the pod when the app exits")
	c.Flags().BoolVarP(&detach, "detach", "d", false, "leave the pod running and print its ID")
	c.Flags().BoolVarP(&interactive, "interactive", "i", false, "keep stdin open (needs attach)")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal (needs attach)")
	return c
}

// waitExitCode waits for an app's exit file and returns its exit code.
func waitExitCode(ctx context.Context, m *pod.Manager, a *pod.App) (int, error) {
	for {
		fresh, err := m.Layout().LoadApp(a.PodID, a.ID)
		if err != nil {
			return -1, err
		}
		if fresh.State == pod.AppExited {
			return fresh.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// exitError makes runclet exit with the app's exit code.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("app exited with code %d", int(e)) }

// followApp copies the app's log to stdout/stderr as it is written and
// returns its exit code once it has exited and its log is drained. A
// first SIGINT or SIGTERM stops the app (its stop signal, then SIGKILL
// after 10s) and says so on stderr; a second one kills it at once.
func followApp(ctx context.Context, m *pod.Manager, a *pod.App, stdout, stderr io.Writer) (int, error) {
	finished := make(chan struct{})
	exitFile := m.Layout().ExitFile(a.PodID, a.ID)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		signals := 0
		for n := 1; ; n++ {
			select {
			case <-tick.C:
				// A stat every tick; the pod record and the supervisor (a
				// socket round trip) only about once a second, for a pod
				// stopped from elsewhere or a supervisor that died.
				if _, err := os.Stat(exitFile); err == nil {
					close(finished)
					return
				}
				if n%50 != 0 {
					continue
				}
				if p, err := m.Layout().LoadPod(a.PodID); err != nil || p.State == pod.PodStopped || !m.SupervisorAlive(ctx, a.PodID) {
					close(finished)
					return
				}
			case <-sigs:
				signals++
				if signals == 1 {
					fmt.Fprintf(stderr, "stopping pod %s (ctrl-c again to kill)\n", a.PodID)
					go m.StopApp(context.Background(), a.PodID, a.ID, 10*time.Second)
				} else {
					// StopApp holds the pod's lock while it waits: the kill
					// goes to the supervisor directly.
					fmt.Fprintf(stderr, "killing pod %s\n", a.PodID)
					go m.KillApp(context.Background(), a.PodID, a.ID, syscall.SIGKILL)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	err := crilog.Copy(ctx, a.LogPath, stdout, stderr, crilog.ReadOptions{Follow: true, Finished: finished, Tail: crilog.TailAll})
	if err != nil && !errdefs.IsNotFound(err) {
		return 0, err
	}
	<-finished
	final, err := m.Layout().LoadApp(a.PodID, a.ID)
	if err != nil {
		return 0, err
	}
	if final.State != pod.AppExited {
		// Never report success for an app whose end nobody recorded.
		return 0, errdefs.Unavailable("app %s: its exit was not recorded (the pod supervisor stopped or died); see %s", a.Name, filepath.Join(m.Layout().PodDir(a.PodID), "stage1.log"))
	}
	return final.ExitCode, nil
}

func appCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "app", Short: "Pod and app steps one at a time, as the CRI does them"}
	var pf podFlags
	sandbox := &cobra.Command{
		Use:   "sandbox",
		Short: "Create an empty pod (namespaces, network, supervisor) and print its ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			cfg, err := pf.config()
			if err != nil {
				return err
			}
			p, err := m.CreatePod(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), p.ID)
			return nil
		},
	}
	pf.add(sandbox)
	sandbox.Flags().StringArrayVarP(&pf.labels, "label", "l", nil, "pod label KEY=VALUE (repeatable)")

	var af appFlags
	add := &cobra.Command{
		Use:   "add POD IMAGE [-- ARGS...]",
		Short: "Create an app in a pod (not started) and print its ID",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, images, err := g.podManager()
			if err != nil {
				return err
			}
			p, err := m.FindPod(args[0])
			if err != nil {
				return err
			}
			if p.OwnedByCRI() {
				// The daemon learns of containers from CreateContainer
				// only: an app added here would be invisible to kubelet.
				return errdefs.FailedPrecondition("pod %s (%s/%s) belongs to the CRI: kubelet manages it through the runclet daemon, which would not see an app added here; use crictl create", p.ID, p.Namespace, p.Name)
			}
			cfg, err := af.config(args[1], args[2:])
			if err != nil {
				return err
			}
			apps, err := m.Layout().ListApps(p.ID)
			if err != nil {
				return err
			}
			for _, a := range apps {
				if a.Name == cfg.Name {
					return errdefs.AlreadyExists("pod %s already has an app named %q (%s); name this one with --name", p.ID, cfg.Name, a.ID[:12])
				}
			}
			img, err := ensureImage(cmd.Context(), images, args[1], cmd.ErrOrStderr(), af.pull)
			if err != nil {
				return err
			}
			if err := af.applyInit(&cfg, images, img); err != nil {
				return err
			}
			a, err := m.AddApp(cmd.Context(), p.ID, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), a.ID)
			return nil
		},
	}
	af.add(add)
	add.Flags().StringVar(&af.name, "name", "", "app name (default: from the image name)")

	// podApp makes an app command; one that changes the app (verb set)
	// refuses a CRI pod's app without --force.
	podApp := func(use, short, verb string, fn func(context.Context, *pod.Manager, *pod.Pod, string) error) *cobra.Command {
		var force bool
		c := &cobra.Command{
			Use:   use + " POD APP",
			Short: short,
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				m, _, err := g.podManager()
				if err != nil {
					return err
				}
				p, err := m.FindPod(args[0])
				if err != nil {
					return err
				}
				if verb != "" {
					if err := notCRIPod(p, verb+" an app of", force); err != nil {
						return err
					}
				}
				return fn(cmd.Context(), m, p, args[1])
			},
		}
		if verb != "" {
			c.Flags().BoolVar(&force, "force", false, "also when the pod is the CRI daemon's (kubelet's)")
		}
		return c
	}
	start := podApp("start", "Start a created app", "start", func(ctx context.Context, m *pod.Manager, p *pod.Pod, app string) error {
		_, err := m.StartApp(ctx, p.ID, app)
		return err
	})
	var timeout time.Duration
	stop := podApp("stop", "Stop an app: its stop signal, then SIGKILL after --timeout", "stop", func(ctx context.Context, m *pod.Manager, p *pod.Pod, app string) error {
		_, err := m.StopApp(ctx, p.ID, app, timeout)
		return err
	})
	stop.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "grace period before SIGKILL")
	stop.Flags().VarP((*seconds)(&timeout), "time", "t", "grace period before SIGKILL (seconds, or a duration such as 1m; same as --timeout)")
	rmApp := podApp("rm", "Remove an app (killing it if it runs)", "remove", func(ctx context.Context, m *pod.Manager, p *pod.Pod, app string) error {
		return m.RemoveApp(ctx, p.ID, app)
	})
	reopen := podApp("reopen-log", "Reopen an app's log file after it was renamed (log rotation)", "", func(ctx context.Context, m *pod.Manager, p *pod.Pod, app string) error {
		return m.ReopenLog(ctx, p.ID, app)
	})
	var out outputFlag
	status := podApp("status", "Show one app", "", func(ctx context.Context, m *pod.Manager, p *pod.Pod, app string) error {
		asJSON, err := out.json()
		if err != nil {
			return err
		}
		_, a, err := resolveApp(ctx, m, []string{p.ID, app})
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(os.Stdout, a)
		}
		return printApps(os.Stdout, []*pod.App{a})
	})
	out.add(status)
	var listOut listOutput
	list := &cobra.Command{
		Use:     "list POD",
		Short:   "List a pod's apps",
		Example: "  runclet app list web -q --filter state=running",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := listOut.check(); err != nil {
				return err
			}
			_, _, all, err := g.podStatus(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			apps := []*pod.App{}
			for _, a := range all {
				if listOut.match(func(k, v string) bool {
					switch k {
					case "id":
						return strings.HasPrefix(a.ID, v)
					case "name":
						return globMatch(v, a.Name)
					case "state":
						return string(a.State) == v
					case "image":
						return globMatch(v, a.Image)
					case "label":
						return labelMatch(v, a.Labels)
					}
					return false
				}) {
					apps = append(apps, a)
				}
			}
			w := cmd.OutOrStdout()
			return render(w, &listOut, apps, func(a *pod.App) string { return a.ID }, func(bool) error { return printApps(w, apps) })
		},
	}
	listOut.add(list, "app", "id", "name", "state", "image", "label")
	c.AddCommand(sandbox, add, start, stop, rmApp, reopen, status, list)
	return c
}

func printApps(w io.Writer, apps []*pod.App) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "APP ID\tNAME\tIMAGE\tSTATE\tEXIT\tCREATED")
	for _, a := range apps {
		exit := ""
		if a.State == pod.AppExited {
			exit = strconv.Itoa(a.ExitCode)
			if a.Reason != "" && a.Reason != "Completed" {
				exit += " (" + a.Reason + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID[:12], a.Name, a.Image, a.State, exit, a.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

type podView struct {
	*pod.Pod
	Apps []*pod.App `json:"apps"`
}

// state is the pod's state as list shows it: broken wins.
func (v podView) state() string {
	if v.Broken != "" {
		return "broken"
	}
	return string(v.State)
}

// ip is the pod's first address; none once stopped or exited (it went
// back to the pool).
func (v podView) ip() string {
	if v.Attachment != nil && !v.Inactive() && len(v.Attachment.PodIPs()) > 0 {
		return v.Attachment.PodIPs()[0]
	}
	return ""
}

func (v podView) ports() string {
	var out []string
	for _, p := range v.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		out = append(out, fmt.Sprintf("%d->%d/%s", p.HostPort, p.ContainerPort, strings.ToLower(proto)))
	}
	return strings.Join(out, ",")
}

func (v podView) labels() string {
	keys := make([]string, 0, len(v.Labels))
	for k := range v.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + v.Labels[k]
	}
	return strings.Join(keys, ",")
}

// has answers list's --filter KEY=VALUE.
func (v podView) has(key, value string) bool {
	switch key {
	case "id":
		return strings.HasPrefix(v.ID, value)
	case "name":
		return globMatch(value, v.Name)
	case "state":
		return v.state() == value || string(v.State) == value
	case "label":
		return labelMatch(value, v.Labels)
	case "flavor":
		return v.Flavor == value
	case "image":
		for _, a := range v.Apps {
			if globMatch(value, a.Image) {
				return true
			}
		}
	}
	return false
}

func podCommands(g *globals) []*cobra.Command {
	var out listOutput
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List pods",
		Example: "  runclet list\n  runclet list -q --filter state=exited\n  runclet list --filter label=tier=web --format '{{.Name}} {{.State}}'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			pods, err := m.ListPods()
			if err != nil {
				return err
			}
			views := make([]podView, 0, len(pods))
			for _, p := range pods {
				fresh, apps, err := m.PodStatus(cmd.Context(), p.ID)
				if err != nil {
					continue // removed meanwhile
				}
				v := podView{fresh, apps}
				if out.match(v.has) {
					views = append(views, v)
				}
			}
			w := cmd.OutOrStdout()
			return render(w, &out, views, func(v podView) string { return v.ID }, func(wide bool) error {
				tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
				if wide {
					fmt.Fprintln(tw, "POD ID\tNAME\tSTATE\tFLAVOR\tAPPS\tIP\tPORTS\tLABELS\tCREATED")
				} else {
					fmt.Fprintln(tw, "POD ID\tNAME\tSTATE\tFLAVOR\tAPPS\tIP\tCREATED")
				}
				for _, v := range views {
					var names []string
					for _, a := range v.Apps {
						names = append(names, a.Name+":"+string(a.State))
					}
					id, created := v.ID[:12], v.CreatedAt.Local().Format(time.DateTime)
					if wide {
						id = v.ID
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, v.Name, v.state(), v.Flavor, strings.Join(names, ","), v.ip(), v.ports(), v.labels(), created)
					} else {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, v.Name, v.state(), v.Flavor, strings.Join(names, ","), v.ip(), created)
					}
				}
				return tw.Flush()
			})
		},
	}
	out.add(list, "pod", "id", "name", "state", "label", "image", "flavor")

	var statusOut outputFlag
	status := &cobra.Command{
		Use:   "status POD",
		Short: "Show a pod and its apps",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := statusOut.json()
			if err != nil {
				return err
			}
			_, p, apps, err := g.podStatus(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), podView{p, apps})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "pod %s (%s): %s, flavor %s\n", p.ID, p.Name, p.State, p.Flavor)
			if p.Broken != "" {
				fmt.Fprintf(w, "broken: %s; it can only be stopped and removed\n", p.Broken)
			}
			if p.Attachment != nil && !p.Inactive() {
				fmt.Fprintf(w, "network %s: %s\n", p.Attachment.Network, strings.Join(p.Attachment.PodIPs(), ", "))
			}
			return printApps(w, apps)
		},
	}
	statusOut.add(status)

	var timeout time.Duration
	var stopForce, rmForce bool
	stop := &cobra.Command{
		Use:   "stop POD...",
		Short: "Stop pods: their apps, supervisor and network",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachPod(g, cmd, args, func(ctx context.Context, m *pod.Manager, p *pod.Pod) error {
				if err := notCRIPod(p, "stop", stopForce); err != nil {
					return err
				}
				return m.StopPod(ctx, p.ID, timeout)
			})
		},
	}
	stop.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "grace period before SIGKILL")
	stop.Flags().VarP((*seconds)(&timeout), "time", "t", "grace period before SIGKILL (seconds, or a duration such as 1m; same as --timeout)")
	stop.Flags().BoolVar(&stopForce, "force", false, "also stop a pod the CRI daemon (kubelet) manages")
	rmTime := seconds(10 * time.Second)
	rm := &cobra.Command{
		Use:   "rm POD...",
		Short: "Remove pods, stopping running ones first (stop signal, SIGKILL after --time)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachPod(g, cmd, args, func(ctx context.Context, m *pod.Manager, p *pod.Pod) error {
				if err := notCRIPod(p, "remove", rmForce); err != nil {
					return err
				}
				// RemovePod kills at once: the grace period is StopPod's.
				if !rmForce && !p.Inactive() {
					if err := m.StopPod(ctx, p.ID, time.Duration(rmTime)); err != nil {
						return err
					}
				}
				return m.RemovePod(ctx, p.ID)
			})
		},
	}
	rm.Flags().BoolVarP(&rmForce, "force", "f", false, "kill running apps at once, and also remove a pod the CRI daemon (kubelet) manages (the daemon drops it from its view)")
	rm.Flags().VarP(&rmTime, "time", "t", "grace period before SIGKILL when stopping a running pod (seconds, or a duration such as 1m)")
	var gcOpts pod.GCOptions
	gc := &cobra.Command{
		Use:   "gc",
		Short: "Remove exited and stopped pods past the grace period, crashed pods with everything they leaked, then unused image content",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if gcOpts.Grace < 0 {
				return errdefs.InvalidArgument("--grace %s: want 0 or more", gcOpts.Grace)
			}
			m, images, err := g.podManager()
			if err != nil {
				return err
			}
			res, err := m.GC(cmd.Context(), gcOpts)
			for _, id := range res.Pods {
				fmt.Fprintf(cmd.OutOrStdout(), "removed pod %s\n", id)
			}
			if err != nil {
				return err
			}
			if br, err := g.network.RemoveUnusedBridge(cmd.Context()); err != nil {
				return err
			} else if br != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "removed unused bridge %s\n", br)
			}
			st, err := images.GC(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d blobs, %d layers; freed %s\n", st.Blobs, st.Layers, humanSize(st.Bytes))
			return nil
		},
	}
	gc.Flags().DurationVar(&gcOpts.Grace, "grace", pod.DefaultGCGrace, "keep exited and stopped pods this long after they finished (0: collect them now)")
	gc.Flags().BoolVar(&gcOpts.IncludeCRI, "include-cri", false, "also collect the CRI daemon's (kubelet's) stopped pods and those whose supervisor died")
	// The exit command a `runclet run` pod's supervisor runs when its
	// apps have exited; not for people.
	exited := &cobra.Command{
		Use:    "pod-exited POD",
		Short:  "End a pod whose apps have all exited (run by its supervisor)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			p, err := m.Layout().LoadPod(args[0]) // an ID, checked before it names a path
			if err != nil {
				return err
			}
			return m.ExitPod(cmd.Context(), p.ID)
		},
	}
	logs := logsCommand(g)
	return []*cobra.Command{list, status, stop, rm, gc, logs, exited}
}

// notCRIPod refuses to act on a pod kubelet made through the daemon
// unless forced: kubelet stops and removes its own pods, and the daemon
// must not be left with a view the CLI changed under it.
func notCRIPod(p *pod.Pod, what string, force bool) error {
	if !p.OwnedByCRI() || force {
		return nil
	}
	return errdefs.FailedPrecondition("pod %s (%s/%s) belongs to the CRI: kubelet manages it through the runclet daemon; %s it with crictl, or pass --force", p.ID, p.Namespace, p.Name, what)
}

// podStatus resolves a pod by ID, prefix or name and reads it with its apps.
func (g *globals) podStatus(ctx context.Context, idOrName string) (*pod.Manager, *pod.Pod, []*pod.App, error) {
	m, _, err := g.podManager()
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := m.FindPod(idOrName)
	if err != nil {
		return nil, nil, nil, err
	}
	p, apps, err := m.PodStatus(ctx, p.ID)
	return m, p, apps, err
}

func eachPod(g *globals, cmd *cobra.Command, args []string, fn func(context.Context, *pod.Manager, *pod.Pod) error) error {
	m, _, err := g.podManager()
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range args {
		p, err := m.FindPod(a)
		if err == nil {
			err = fn(cmd.Context(), m, p)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(cmd.OutOrStdout(), p.ID)
	}
	return errors.Join(errs...)
}

func logsCommand(g *globals) *cobra.Command {
	var follow, timestamps bool
	var tail int
	var since time.Duration
	c := &cobra.Command{
		Use:   "logs POD [APP]",
		Short: "Print an app's logs (the pod's only app when APP is omitted)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := g.podManager()
			if err != nil {
				return err
			}
			_, a, err := resolveApp(cmd.Context(), m, args)
			if err != nil {
				return err
			}
			opts := crilog.ReadOptions{Follow: follow, Tail: tail, Timestamps: timestamps}
			if since > 0 {
				opts.Since = time.Now().Add(-since)
			}
			if follow {
				finished := make(chan struct{})
				opts.Finished = finished
				go func() {
					for {
						if fresh, err := m.Layout().LoadApp(a.PodID, a.ID); err != nil || fresh.State == pod.AppExited {
							close(finished)
							return
						}
						time.Sleep(100 * time.Millisecond)
					}
				}()
			}
			return crilog.Copy(cmd.Context(), a.LogPath, cmd.OutOrStdout(), cmd.ErrOrStderr(), opts)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the app writes, until it exits")
	c.Flags().BoolVar(&timestamps, "timestamps", false, "prefix lines with their time")
	c.Flags().IntVar(&tail, "tail", crilog.TailAll, "only the last N lines (-1: all)")
	c.Flags().DurationVar(&since, "since", 0, "only lines newer than this, e.g. 10m")
	return c
}

// seconds is a grace period flag that takes podman's plain seconds
// ("-t 5") as well as Go durations ("-t 1m30s").
type seconds time.Duration

func (d *seconds) String() string { return time.Duration(*d).String() }
func (d *seconds) Type() string   { return "seconds" }
func (d *seconds) Set(v string) error {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		*d = seconds(time.Duration(n) * time.Second)
		return nil
	}
	x, err := time.ParseDuration(v)
	if err != nil || x < 0 {
		return errdefs.InvalidArgument("%q: want seconds or a duration such as 30s", v)
	}
	*d = seconds(x)
	return nil
}

// environment is --env-file then -e, in order (a later KEY wins in the
// app); a KEY without "=" takes runclet's own value and is left out when
// runclet has none, as docker and podman do.
func (f *appFlags) environment() ([]string, error) {
	var out []string
	add := func(e, from string) error {
		k, _, hasValue := strings.Cut(e, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return errdefs.InvalidArgument("%s %q: want KEY=VALUE or KEY", from, e)
		}
		if hasValue {
			out = append(out, e)
		} else if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
		return nil
	}
	for _, file := range f.envFiles {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, errdefs.InvalidArgument("--env-file: %w", err)
		}
		for n, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := add(line, fmt.Sprintf("--env-file %s line %d:", file, n+1)); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range f.env {
		if err := add(e, "--env"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func parseLabels(in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, l := range in {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, errdefs.InvalidArgument("--label %q: want KEY=VALUE", l)
		}
		out[k] = v
	}
	return out, nil
}

// initPath is where an app sees runclet-init with --init.
const initPath = "/dev/init"

// applyInit puts runclet-init in front of the app's command: the command
// becomes /dev/init -- ENTRYPOINT CMD, resolved here from the image as
// the spec would resolve it (--entrypoint replaces ENTRYPOINT and drops
// the image's CMD; arguments replace CMD).
func (f *appFlags) applyInit(cfg *pod.AppConfig, images *image.Store, img image.Image) error {
	if !f.init {
		return nil
	}
	bin, err := findBeside("runclet-init")
	if err != nil {
		return err
	}
	ic, err := images.Config(img)
	if err != nil {
		return err
	}
	s := &cfg.Spec
	entry, args := ic.Config.Entrypoint, ic.Config.Cmd
	if len(s.Command) > 0 {
		entry, args = s.Command, nil
	}
	if len(s.Args) > 0 {
		args = s.Args
	}
	if len(entry)+len(args) == 0 {
		return errdefs.InvalidArgument("--init: image %s has no command and none was given", cfg.Image)
	}
	s.Command = append(append([]string{initPath, "--"}, entry...), args...)
	s.Args = nil
	s.Mounts = append(s.Mounts, spec.Mount{HostPath: bin, ContainerPath: initPath, Readonly: true})
	return nil
}
