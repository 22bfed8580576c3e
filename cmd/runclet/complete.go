package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/runclet/runclet/runtime/pod"
)

// Shell completion of pod, app and image names (cobra's dynamic
// completion: the shell runs `runclet __complete ...`). Completion reads
// the records on disk only; it never fails loudly, it offers nothing.

type argKind int

const (
	argPod argKind = iota
	argApp         // an app of the pod named by the first argument
	argImage
	argNone
)

// completeArgs completes positional arguments by kind; the last kind
// repeats (POD..., IMAGE...).
func completeArgs(g *globals, kinds ...argKind) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		kind := kinds[len(kinds)-1]
		if len(args) < len(kinds) {
			kind = kinds[len(args)]
		}
		// Loaded again: __complete parses no flags itself, so the root
		// pre-run loaded the config without --config/--root/--run-root,
		// which are parsed only now, with the completed command's flags.
		if g.load(cmd) != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		switch kind {
		case argPod:
			out = completePods(g)
		case argApp:
			if len(args) > 0 {
				out = completeApps(g, args[0])
			}
		case argImage:
			out = completeImages(g)
		}
		var keep []string
		for _, c := range out {
			if strings.HasPrefix(c, toComplete) {
				keep = append(keep, c)
			}
		}
		return keep, cobra.ShellCompDirectiveNoFileComp
	}
}

func (g *globals) layout() pod.Layout {
	return pod.Layout{Root: g.cfg.Root, RunRoot: g.cfg.RunRoot}
}

func completePods(g *globals) []string {
	pods, _ := g.layout().ListPods()
	var out []string
	for _, p := range pods {
		if p.Name != "" {
			out = append(out, p.Name+"\t"+string(p.State)+" pod "+p.ID[:12])
		} else {
			out = append(out, p.ID[:12]+"\t"+string(p.State)+" pod")
		}
	}
	return out
}

func completeApps(g *globals, podRef string) []string {
	l := g.layout()
	pods, _ := l.ListPods()
	for _, p := range pods {
		if p.Name == podRef || p.ID == podRef || len(podRef) >= 4 && strings.HasPrefix(p.ID, podRef) {
			apps, _ := l.ListApps(p.ID)
			var out []string
			for _, a := range apps {
				out = append(out, a.Name+"\t"+string(a.State)+" app of "+a.Image)
			}
			return out
		}
	}
	return nil
}

func completeImages(g *globals) []string {
	s, err := g.imageStore()
	if err != nil {
		return nil
	}
	imgs, _ := s.List()
	var out []string
	for _, img := range imgs {
		for _, t := range img.RepoTags {
			out = append(out, t)
		}
		if len(img.RepoTags) == 0 {
			out = append(out, img.ID.Encoded()[:12]+"\tuntagged image")
		}
	}
	return out
}

// addCompletions sets the argument completion of every command that
// takes pods, apps or images.
func addCompletions(root *cobra.Command, g *globals) {
	set := map[string][]argKind{
		"status": {argPod}, "stop": {argPod}, "rm": {argPod}, "logs": {argPod, argApp},
		"attach": {argPod, argApp}, "exec": {argPod, argApp, argNone}, "enter": {argPod, argApp},
		"inspect": {argPod, argApp}, "ps": {argPod, argApp}, "port": {argPod, argNone}, "stats": {argPod},
		"cp":        {argNone},
		"run":       {argImage, argNone},
		"app start": {argPod, argApp}, "app stop": {argPod, argApp}, "app rm": {argPod, argApp},
		"app status": {argPod, argApp}, "app reopen-log": {argPod, argApp}, "app list": {argPod, argNone},
		"app add":  {argPod, argImage, argNone},
		"image rm": {argImage}, "image inspect": {argImage, argNone}, "image tag": {argImage, argNone},
		"image export": {argImage}, "image history": {argImage, argNone},
	}
	fixed := map[string][]string{
		"stage1": {"runc", "fly"}, "net": {"default", "host"}, "pull": {"always", "missing", "never"},
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		name := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if kinds, ok := set[name]; ok && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = completeArgs(g, kinds...)
		}
		for flag, values := range fixed {
			if c.LocalFlags().Lookup(flag) != nil {
				c.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
