package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

var execNotes = []string{
	"exec: each exec is one CLI process: runclet exec (finds the pod on disk, asks its stage1-runc supervisor over its control socket to run the process through libcontainer, streams until the exit frame); ctr task exec (containerd gRPC, shim ttrpc, a runc exec per process, stdio through fifos); crictl exec (containerd cri Exec, then an SPDY stream from its streaming server) and crictl exec --sync (cri ExecSync, output buffered: what kubelet's exec probes use)",
	"exec: the app is \"sleep 100000\" (busybox); runclet's pod and the CRI pod have a CNI network, ctr's container an empty netns; runclet's CRI server is not measured yet",
	"exec: CLI start = \"--version\" of each CLI, timed alongside: what starting the CLI process costs before any work",
}

func (b *bench) execLatency(ctx context.Context, execs int) ([]Row, error) {
	fmt.Fprintln(os.Stderr, "exec: starting a sleep in each tool")
	out, err := b.do(ctx, b.runcletArgs("run", "-d", image, "--", "sleep", "100000")...)
	if err != nil {
		return nil, err
	}
	podID := b.pod(lastLine(out))
	ctrID := b.tag + "-exec"
	if _, err := b.do(ctx, b.ctrRun("-d", ctrID, "sleep", "100000")...); err != nil {
		return nil, err
	}
	criPod, cfg, err := b.criPod(ctx, "exec", filepath.Join(b.dir, "crilogs", "exec"))
	if err != nil {
		return nil, err
	}
	criCtr, err := b.criContainer(ctx, criPod, cfg, "sleep", image, "sleep", "100000")
	if err != nil {
		return nil, err
	}
	if _, err := b.do(ctx, b.crictlArgs("start", criCtr)...); err != nil {
		return nil, err
	}
	fifos := filepath.Join(b.dir, "fifo")
	if err := os.MkdirAll(fifos, 0o700); err != nil {
		return nil, err
	}

	timed := func(argv func(i int) []string) func(context.Context, int) ([]time.Duration, error) {
		return func(ctx context.Context, i int) ([]time.Duration, error) { return b.time(ctx, argv(i)...) }
	}
	rows, err := alternate(ctx, "exec true", execs, []tool{
		{name: "runclet exec", timed: timed(func(int) []string { return b.runcletArgs("exec", podID, "--", "true") })},
		{name: "ctr task exec", timed: timed(func(i int) []string {
			return b.ctrArgs("task", "exec", "--fifo-dir", fifos, "--exec-id", fmt.Sprintf("e%d", i+1), ctrID, "true")
		})},
		{name: "crictl exec (containerd cri)", timed: timed(func(int) []string { return b.crictlArgs("exec", criCtr, "true") })},
		{name: "crictl exec --sync (containerd cri)", timed: timed(func(int) []string { return b.crictlArgs("exec", "--sync", criCtr, "true") })},
	})
	if err != nil {
		return nil, err
	}
	floor, err := alternate(ctx, "CLI start", execs, []tool{
		{name: "runclet --version", timed: timed(func(int) []string { return []string{b.runclet[0], "--version"} })},
		{name: "ctr --version", timed: timed(func(int) []string { return []string{"ctr", "--version"} })},
		{name: "crictl --version", timed: timed(func(int) []string { return []string{b.crictl[0], "--version"} })},
	})
	if err != nil {
		return nil, err
	}
	rows = append(rows, floor...)

	if _, err := b.do(ctx, b.runcletArgs("rm", podID)...); err != nil {
		return nil, err
	}
	if err := b.ctrRemove(ctx, ctrID); err != nil {
		return nil, err
	}
	if _, err := b.do(ctx, b.crictlArgs("rmp", "-f", criPod)...); err != nil {
		return nil, err
	}
	return rows, nil
}
