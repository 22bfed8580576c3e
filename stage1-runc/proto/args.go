package proto

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
)

// SocketPath and PidPath are where the supervisor of a pod's run dir
// listens and records its pid; HolderPidPath where the pid of the pod's
// pid namespace holder is.
func SocketPath(runDir string) string    { return filepath.Join(runDir, "supervisor.sock") }
func PidPath(runDir string) string       { return filepath.Join(runDir, "supervisor.pid") }
func HolderPidPath(runDir string) string { return filepath.Join(runDir, "pidns-init.pid") }

// SuperviseArgs are the arguments of `stage1-runc supervise`: stage0
// builds the command line with Args, the supervisor parses it with
// ParseSuperviseArgs.
type SuperviseArgs struct {
	PodID     string
	Flavor    string // runc (default) or fly
	RunDir    string // <run root>/pods/<id>: socket and pid file
	StateRoot string // libcontainer state root shared by all pods
	// ReadyFD, when > 0, is a pipe the supervisor writes "ok\n" (or an
	// error) to once it serves, then closes: stage0 waits on it.
	ReadyFD       int
	SystemdCgroup bool
	MaxLogLine    int // CRI log line size before splitting; 0: 16 KiB
	// PidNS, when set, asks for a pod-wide pid namespace pinned there.
	PidNS string
	// HolderCgroup is the cgroupsPath of the leaf the pid namespace's
	// holder is moved into: the one started for PidNS, or the one stage0
	// started (HolderPid) for a user-namespaced pod.
	HolderCgroup string
	HolderPid    int
	// ExitCommand (program and arguments), when set, is run detached each
	// time an app's exit leaves every app of the pod exited: stage0 then
	// ends the pod (see the contract).
	ExitCommand []string
	Debug       bool
}

// DefaultMaxLogLine is MaxLogLine when none is given.
const DefaultMaxLogLine = 16 << 10

// Args is the command line after `stage1-runc supervise`.
func (a SuperviseArgs) Args() []string {
	args := []string{"--pod-id", a.PodID, "--run-dir", a.RunDir, "--state-root", a.StateRoot}
	if a.Flavor != "" {
		args = append(args, "--flavor", a.Flavor)
	}
	if a.ReadyFD > 0 {
		args = append(args, "--ready-fd", strconv.Itoa(a.ReadyFD))
	}
	if a.MaxLogLine > 0 {
		args = append(args, "--max-log-line", strconv.Itoa(a.MaxLogLine))
	}
	if a.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	if a.PidNS != "" {
		args = append(args, "--pid-ns", a.PidNS)
	}
	if a.HolderCgroup != "" {
		args = append(args, "--holder-cgroup", a.HolderCgroup)
	}
	if a.HolderPid > 0 {
		args = append(args, "--holder-pid", strconv.Itoa(a.HolderPid))
	}
	if len(a.ExitCommand) > 0 {
		args = append(args, "--exit-command", a.ExitCommand[0])
		for _, arg := range a.ExitCommand[1:] {
			args = append(args, "--exit-command-arg", arg)
		}
	}
	if a.Debug {
		args = append(args, "--debug")
	}
	return args
}

// ParseSuperviseArgs parses what Args made; errors (and usage) go to out.
func ParseSuperviseArgs(args []string, out io.Writer) (SuperviseArgs, error) {
	fs := flag.NewFlagSet("supervise", flag.ContinueOnError)
	fs.SetOutput(out)
	var a SuperviseArgs
	fs.StringVar(&a.PodID, "pod-id", "", "pod ID")
	fs.StringVar(&a.Flavor, "flavor", "runc", "stage1 flavor: runc or fly")
	fs.StringVar(&a.RunDir, "run-dir", "", "pod runtime directory (socket, pid file)")
	fs.StringVar(&a.StateRoot, "state-root", "", "libcontainer state root (runc --root)")
	fs.IntVar(&a.ReadyFD, "ready-fd", 0, "pipe to report readiness on")
	fs.BoolVar(&a.SystemdCgroup, "systemd-cgroup", false, "use the systemd cgroup driver")
	fs.IntVar(&a.MaxLogLine, "max-log-line", DefaultMaxLogLine, "CRI log line size before splitting")
	fs.BoolVar(&a.Debug, "debug", false, "debug logging")
	fs.StringVar(&a.PidNS, "pid-ns", "", "create a pod-wide pid namespace and pin it at this path")
	fs.StringVar(&a.HolderCgroup, "holder-cgroup", "", "cgroupsPath of the leaf the pid namespace holder is moved into")
	fs.IntVar(&a.HolderPid, "holder-pid", 0, "pid of a pid namespace holder stage0 started (user-namespaced pods)")
	var exitCmd string
	var exitArgs []string
	fs.StringVar(&exitCmd, "exit-command", "", "program to run once every app has exited")
	fs.Func("exit-command-arg", "an argument of the exit command (repeatable)", func(s string) error {
		exitArgs = append(exitArgs, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return a, err
	}
	if exitCmd != "" {
		a.ExitCommand = append([]string{exitCmd}, exitArgs...)
	}
	if a.PodID == "" || a.RunDir == "" || a.StateRoot == "" {
		return a, fmt.Errorf("--pod-id, --run-dir and --state-root are required")
	}
	return a, nil
}

// DestroyArgs are the arguments of `stage1-runc destroy`, which stage0
// runs when a pod's supervisor is gone: it removes what the supervisor
// would have of each container (processes, cgroup, libcontainer state).
type DestroyArgs struct {
	StateRoot     string
	SystemdCgroup bool
	// Containers are libcontainer IDs and their bundles (the bundle finds
	// the cgroup of a container whose state was never written).
	Containers []DestroyContainer
	// CgroupParent, when set, is a pod cgroup (cgroupfs driver) removed
	// with whatever still runs in it, after the containers.
	CgroupParent string
	// HolderCgroup, when set, is the cgroupsPath of a pid namespace
	// holder's leaf, removed with whatever still runs in it.
	HolderCgroup string
}

// DestroyContainer names one container to destroy.
type DestroyContainer struct{ ID, Bundle string }

// Args is the command line after `stage1-runc destroy`: the flags, then
// an ID and a bundle for each container.
func (a DestroyArgs) Args() []string {
	args := []string{"--state-root", a.StateRoot}
	if a.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	if a.HolderCgroup != "" {
		args = append(args, "--holder-cgroup", a.HolderCgroup)
	}
	if a.CgroupParent != "" {
		args = append(args, "--cgroup-parent", a.CgroupParent)
	}
	args = append(args, "--")
	for _, c := range a.Containers {
		args = append(args, c.ID, c.Bundle)
	}
	return args
}

// ParseDestroyArgs parses what Args made; errors (and usage) go to out.
func ParseDestroyArgs(args []string, out io.Writer) (DestroyArgs, error) {
	fs := flag.NewFlagSet("destroy", flag.ContinueOnError)
	fs.SetOutput(out)
	var a DestroyArgs
	fs.StringVar(&a.StateRoot, "state-root", "", "libcontainer state root (runc --root)")
	fs.BoolVar(&a.SystemdCgroup, "systemd-cgroup", false, "use the systemd cgroup driver")
	fs.StringVar(&a.CgroupParent, "cgroup-parent", "", "a pod cgroup to remove after the containers")
	fs.StringVar(&a.HolderCgroup, "holder-cgroup", "", "a pid namespace holder's cgroup leaf to remove")
	if err := fs.Parse(args); err != nil {
		return a, err
	}
	rest := fs.Args()
	if a.StateRoot == "" || len(rest)%2 != 0 {
		return a, fmt.Errorf("usage: destroy --state-root DIR [--systemd-cgroup] [--holder-cgroup CGROUPSPATH] [--cgroup-parent PATH] -- [ID BUNDLE]...")
	}
	for i := 0; i < len(rest); i += 2 {
		if rest[i] == "" || filepath.Base(rest[i]) != rest[i] || rest[i] == ".." || rest[i] == "." {
			return a, fmt.Errorf("bad container ID %q", rest[i])
		}
		a.Containers = append(a.Containers, DestroyContainer{ID: rest[i], Bundle: rest[i+1]})
	}
	return a, nil
}
