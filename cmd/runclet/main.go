// Command runclet is stage0: the CLI people use and, later, the CRI daemon
// kubelet talks to. It only parses flags and calls the runtime library.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/runclet/runclet/runtime/config"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/network"
)

// version is set by the Makefile from git describe.
var version = "dev"

// globals are the flags every command has.
type globals struct {
	configPath string
	root       string
	runRoot    string
	debug      bool
	cfg        *config.Config
	network    *network.Manager // set by podManager
}

func main() {
	fsutil.CloseInheritedOnExec()
	g := &globals{}
	root := &cobra.Command{
		Use:           "runclet",
		Short:         "A container runtime for Kubernetes nodes and for people at a shell",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.load(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", config.DefaultPath, "configuration file")
	pf.StringVar(&g.root, "root", "", "data root: images and pods (default from config: /var/lib/runclet)")
	pf.StringVar(&g.runRoot, "run-root", "", "runtime state root (default from config: /run/runclet)")
	pf.BoolVar(&g.debug, "debug", false, "log debug messages")

	root.AddCommand(imageCommand(g), configCommand(g), runCommand(g), appCommand(g),
		attachCommand(g), execCommand(g), enterCommand(g), daemonCommand(g), trustCommand(g))
	addInsecureOptionsFlag(root)
	root.AddCommand(podCommands(g)...)
	if err := root.Execute(); err != nil {
		var code exitError
		if errors.As(err, &code) {
			os.Exit(int(code)) // the app's own exit code; it said why itself
		}
		fmt.Fprintln(os.Stderr, "runclet:", err)
		os.Exit(exitCode(err))
	}
}

func (g *globals) load(cmd *cobra.Command) error {
	level := slog.LevelWarn
	if g.debug {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	if cmd.Annotations["noconfig"] == "true" {
		return nil
	}
	cfg, err := config.Load(g.configPath)
	if err != nil {
		return err
	}
	if g.root != "" {
		cfg.Root = g.root
	}
	if g.runRoot != "" {
		cfg.RunRoot = g.runRoot
	}
	g.cfg = cfg
	return nil
}

// exitCode separates "you asked for something wrong" (2) from failures (1),
// so scripts can tell a typo from a broken registry.
func exitCode(err error) int {
	if errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrNotFound) {
		return 2
	}
	return 1
}

func configCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Show configuration"}
	c.AddCommand(&cobra.Command{
		Use:         "default",
		Short:       "Print the default configuration, with comments",
		Args:        cobra.NoArgs,
		Annotations: map[string]string{"noconfig": "true"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), config.DefaultTOML())
			return err
		},
	})
	return c
}
