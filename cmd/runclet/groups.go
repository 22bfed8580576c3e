package main

import "github.com/spf13/cobra"

// groupCommands sorts `runclet --help` into the groups a person looks
// for, most used first.
func groupCommands(root *cobra.Command) {
	groups := []struct {
		id, title string
		names     []string
	}{
		{"pods", "Pods and apps:", []string{"run", "list", "status", "logs", "exec", "enter", "attach", "stop", "rm", "gc", "app"}},
		{"look", "Looking inside:", []string{"inspect", "ps", "stats", "events", "port", "cp"}},
		{"images", "Images:", []string{"image", "trust"}},
		{"system", "This runclet:", []string{"version", "config", "system", "daemon", "completion", "help"}},
	}
	byName := map[string]string{}
	for _, g := range groups {
		root.AddGroup(&cobra.Group{ID: g.id, Title: g.title})
		for _, n := range g.names {
			byName[n] = g.id
		}
	}
	for _, c := range root.Commands() {
		if id, ok := byName[c.Name()]; ok {
			c.GroupID = id
		}
	}
	root.SetHelpCommandGroupID("system")
	root.SetCompletionCommandGroupID("system")
}
