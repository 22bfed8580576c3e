package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// genManCommand writes a man page per command (runclet(1),
// runclet-run(1), ...); `make install` runs it. Hidden: not for people.
func genManCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:         "gen-man DIR",
		Short:       "Write the man pages of every command into DIR",
		Hidden:      true,
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{"noconfig": "true"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root.DisableAutoGenTag = true // reproducible pages: no generation date
			return doc.GenManTree(root, &doc.GenManHeader{Title: "RUNCLET", Section: "1", Source: "runclet " + version, Manual: "runclet manual"}, args[0])
		},
	}
}
