// Command stage1-runc is the per-pod supervisor (`stage1-runc supervise`)
// and libcontainer's container init (`stage1-runc init`), which is why it
// must stay small: libcontainer clones this binary for every container
// start.
package main

import (
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
	case "ns-holder":
		os.Exit(supervisor.NSHolder(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: stage1-runc supervise --pod-id ID --run-dir DIR --state-root DIR [--flavor runc|fly] [--ready-fd N]\n       stage1-runc ns-holder [--pid-ns] HOSTNAME\n       stage1-runc version")
	os.Exit(2)
}

func supervise(args []string) int {
	fs := flag.NewFlagSet("supervise", flag.ContinueOnError)
	var o supervisor.Options
	var debugLog bool
	fs.StringVar(&o.PodID, "pod-id", "", "pod ID")
	fs.StringVar(&o.Flavor, "flavor", "runc", "stage1 flavor: runc or fly")
	fs.StringVar(&o.RunDir, "run-dir", "", "pod runtime directory (socket, pid file)")
	fs.StringVar(&o.StateRoot, "state-root", "", "libcontainer state root (runc --root)")
	fs.IntVar(&o.ReadyFD, "ready-fd", 0, "pipe to report readiness on")
	fs.BoolVar(&o.SystemdCgroup, "systemd-cgroup", false, "use the systemd cgroup driver")
	fs.IntVar(&o.MaxLogLine, "max-log-line", 16<<10, "CRI log line size before splitting")
	fs.BoolVar(&debugLog, "debug", false, "debug logging")
	fs.StringVar(&o.PidNS, "pid-ns", "", "create a pod-wide pid namespace and pin it at this path")
	fs.StringVar(&o.HolderCgroup, "holder-cgroup", "", "cgroupsPath of the leaf the pid namespace holder is moved into")
	fs.IntVar(&o.HolderPid, "holder-pid", 0, "pid of a pid namespace holder stage0 started (user-namespaced pods)")
	var exitCmd string
	var exitArgs []string
	fs.StringVar(&exitCmd, "exit-command", "", "program to run once every app has exited")
	fs.Func("exit-command-arg", "an argument of the exit command (repeatable)", func(a string) error {
		exitArgs = append(exitArgs, a)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if exitCmd != "" {
		o.ExitCommand = append([]string{exitCmd}, exitArgs...)
	}
	if o.PodID == "" || o.RunDir == "" || o.StateRoot == "" {
		fmt.Fprintln(os.Stderr, "stage1-runc supervise: --pod-id, --run-dir and --state-root are required")
		return 2
	}
	level := slog.LevelInfo
	if debugLog {
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
