package main

import (
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/runclet/runclet/cri"
	"github.com/runclet/runclet/internal/errdefs"
)

// daemonCommand is `runclet daemon`: the CRI server kubelet talks to.
func daemonCommand(g *globals) *cobra.Command {
	var listen, logLevel string
	c := &cobra.Command{
		Use:   "daemon",
		Short: "Serve the CRI (kubelet's runtime and image services) on a unix socket",
		Long: `Serve CRI v1 on a unix socket (default unix://<run root>/runclet.sock, mode 0600)
until SIGTERM or SIGINT. Pods keep running when the daemon stops; a daemon that
starts again finds them on disk. See docs/cri.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := setLogLevel(logLevel, g.debug); err != nil {
				return err
			}
			if listen != "" {
				if !strings.HasPrefix(listen, "unix://") || !filepath.IsAbs(strings.TrimPrefix(listen, "unix://")) {
					return errdefs.InvalidArgument("--listen %q: want unix:///absolute/path", listen)
				}
				g.cfg.CRI.Listen = listen
			}
			if err := checkDaemonTrust(g.trustVerifier()); err != nil {
				return err
			}
			pods, images, err := g.podManager()
			if err != nil {
				return err
			}
			var nri *cri.NRIOptions
			if n := g.cfg.NRI; n.Enable {
				nri = &cri.NRIOptions{
					SocketPath: n.SocketPath, PluginPath: n.PluginPath, PluginConfigPath: n.PluginConfigPath,
					RegistrationTimeout: n.RegistrationTimeout, RequestTimeout: n.RequestTimeout,
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return cri.Run(ctx, cri.DaemonOptions{
				Options: cri.Options{
					Runtime:           &cri.Adapter{Manager: pods, Images: images, Network: g.network},
					Version:           version,
					CgroupDriver:      g.cfg.Cgroup.Driver,
					DefaultFlavor:     g.cfg.Stage1.DefaultFlavor,
					RuntimeHandlers:   g.cfg.CRI.RuntimeHandlers,
					AllowFly:          g.cfg.CRI.Fly.Enable,
					StreamAddress:     g.cfg.CRI.StreamAddress,
					StreamIdleTimeout: g.cfg.CRI.StreamIdleTimeout,
					ResyncInterval:    g.cfg.CRI.ResyncInterval,
					MetricsAddress:    g.cfg.CRI.MetricsAddress,
					NRI:               nri,
					Info:              g.cfg,
				},
				Socket:      g.cfg.SocketPath(),
				RunRoot:     g.cfg.RunRoot,
				DataRoot:    g.cfg.Root,
				StopTimeout: g.cfg.CRI.StopTimeout,
			})
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "socket to serve on, unix:///PATH (default from config: unix://<run root>/runclet.sock)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error (--debug means debug)")
	return c
}

// setLogLevel replaces the CLI's quiet default logger: a daemon logs
// what it does.
func setLogLevel(name string, debug bool) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(name)); err != nil {
		return errdefs.InvalidArgument("--log-level %q: want debug, info, warn or error", name)
	}
	if debug {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	return nil
}
