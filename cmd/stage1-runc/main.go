// Command stage1-runc is the per-pod supervisor (`stage1-runc supervise`)
// and libcontainer's container init (`stage1-runc init`), which is why it
// must stay small: libcontainer clones this binary for every container
// start.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/stage1-runc/container"
	"github.com/runclet/runclet/stage1-runc/proto"
	"github.com/runclet/runclet/stage1-runc/supervisor"
)

var version = "dev"

func init() {
	container.MaybeInit() // does not return when run as `init`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "version", "--version":
		fmt.Println("stage1-runc", version)
		fmt.Println("contract:", proto.Version) // runclet version reads both lines
	case "supervise":
		fsutil.CloseInheritedOnExec() // the ready pipe stays usable here
		os.Exit(supervise(os.Args[2:]))
	case "pidns-init":
		os.Exit(supervisor.PidnsInit())
	case "destroy":
		os.Exit(destroy(os.Args[2:]))
	case "ns-holder":
		os.Exit(supervisor.NSHolder(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: stage1-runc supervise --pod-id ID --run-dir DIR --state-root DIR [--flavor runc|fly] [--ready-fd N]\n       stage1-runc destroy --state-root DIR [--systemd-cgroup] [--cgroup-parent PATH] -- [ID BUNDLE]...\n       stage1-runc ns-holder [--pid-ns] HOSTNAME\n       stage1-runc version")
	os.Exit(2)
}

func supervise(args []string) int {
	o, err := proto.ParseSuperviseArgs(args, os.Stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "stage1-runc supervise:", err)
		}
		return 2
	}
	level := slog.LevelInfo
	if o.Debug {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("pod", o.PodID))
	// One supervisor per pod is the memory multiplier: keep its heap small.
	debug.SetGCPercent(50)
	if err := supervisor.Run(o); err != nil {
		slog.Error("supervisor failed", "err", err)
		return 1
	}
	return 0
}

// destroy removes containers a dead supervisor left (rkt's stage1 gc):
// stage0 runs it instead of knowing libcontainer's state and cgroups.
func destroy(args []string) int {
	a, err := proto.ParseDestroyArgs(args, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stage1-runc destroy:", err)
		return 2
	}
	opts := container.Options{StateRoot: a.StateRoot, SystemdCgroup: a.SystemdCgroup}
	code := 0
	for _, c := range a.Containers {
		if err := container.DestroyByID(opts, c.ID, c.Bundle); err != nil {
			fmt.Fprintf(os.Stderr, "stage1-runc destroy %s: %v\n", c.ID, err)
			code = 1
		}
	}
	if a.HolderCgroup != "" {
		if err := container.DestroyHolderCgroup(opts, a.HolderCgroup); err != nil {
			fmt.Fprintf(os.Stderr, "stage1-runc destroy: cgroup %s: %v\n", a.HolderCgroup, err)
			code = 1
		}
	}
	if a.CgroupParent != "" {
		if err := container.DestroyCgroupTree(a.CgroupParent); err != nil {
			fmt.Fprintf(os.Stderr, "stage1-runc destroy: cgroup %s: %v\n", a.CgroupParent, err)
			code = 1
		}
	}
	return code
}
