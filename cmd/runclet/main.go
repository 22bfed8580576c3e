// Command runclet is stage0: the CLI people use and, later, the CRI daemon
// kubelet talks to. It only parses flags and calls the runtime library.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/config"
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
		attachCommand(g), execCommand(g), enterCommand(g), daemonCommand(g),
		inspectCommand(g), versionCommand(g), psCommand(g), portCommand(g), statsCommand(g),
		eventsCommand(g), cpCommand(g), systemCommand(g), trustCommand(g))
	addInsecureOptionsFlag(root)
	root.AddCommand(podCommands(g)...)
	root.AddCommand(genManCommand(root))
	addCompletions(root, g)
	groupCommands(root)
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

// The exit codes of runclet's own failures, as podman and docker use them,
// so that a script can tell them from the exit code of the app or command,
// which runclet passes through otherwise (docs/cli.md).
const (
	exitRuncletFailed = 125 // runclet itself failed: bad flags, no such pod, ...
	exitCannotInvoke  = 126 // the command exists but cannot be run
	exitNotFound      = 127 // the command was not found in the image
)

// exitCode maps runclet's own error to its exit code: 127 and 126 when
// the app's or exec's command could not be found or run (the messages of
// stage1's explainStartError, which cross the supervisor's socket as
// text), else 125.
func exitCode(err error) int {
	msg := err.Error()
	if i := strings.Index(msg, "exec: \""); i >= 0 {
		switch rest := msg[i:]; {
		case strings.Contains(rest, ": not found in the image"):
			return exitNotFound
		case strings.Contains(rest, ": permission denied"):
			return exitCannotInvoke
		}
	}
	return exitRuncletFailed
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
	}, configShowCommand(g))
	return c
}
