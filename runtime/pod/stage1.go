package pod

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// supervisorSocket is where a pod's supervisor listens.
func (l Layout) supervisorSocket(id string) string { return proto.SocketPath(l.RunDir(id)) }

// startSupervisor starts the pod's stage1 supervisor detached from this
// process (own session, stdio to a log file in the pod dir) and waits
// until it reports that it serves. stage0 may exit right after: the
// supervisor and the pod's apps live on.
func (m *Manager) startSupervisor(ctx context.Context, p *Pod) error {
	logPath := filepath.Join(m.l.PodDir(p.ID), "stage1.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	args := proto.SuperviseArgs{PodID: p.ID, Flavor: p.Flavor, RunDir: m.l.RunDir(p.ID), StateRoot: m.l.StateRoot(),
		ReadyFD: 3, MaxLogLine: m.opts.MaxLogLine, SystemdCgroup: m.opts.SystemdCgroup}
	if p.PIDNS != "" {
		if args.HolderCgroup, err = m.holderCgroup(p); err != nil {
			return err
		}
		if p.IDMap == nil {
			args.PidNS = p.PIDNS
		} else {
			// With a user namespace, the ns-holder stage0 started holds it.
			args.HolderPid = readPidFile(proto.HolderPidPath(m.l.RunDir(p.ID)))
		}
	}
	if p.ExitWithApps && len(m.opts.ExitCommand) > 0 {
		args.ExitCommand = append(slices.Clone(m.opts.ExitCommand), p.ID)
	}
	cmd := exec.Command(m.opts.Stage1Path, append([]string{"supervise"}, args.Args()...)...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return fmt.Errorf("start pod supervisor %s: %w", m.opts.Stage1Path, err)
	}
	readyW.Close()
	// Reap it should it exit while this process lives (a daemon); a CLI
	// exits first and init inherits it.
	go cmd.Wait()

	msg := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(readyR, 4096))
		msg <- string(b)
	}()
	select {
	case s := <-msg:
		if s == "ok\n" {
			return nil
		}
		cmd.Process.Kill()
		if s == "" {
			s = "exited before serving: " + tail(logPath)
		}
		return fmt.Errorf("pod supervisor: %s", strings.TrimSpace(s))
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		return errdefs.Unavailable("pod supervisor did not report ready within 30s: %s", tail(logPath))
	case <-ctx.Done():
		cmd.Process.Kill()
		return ctx.Err()
	}
}

// holderCgroup is the cgroup leaf, under the pod's cgroup parent, of the
// process holding the pod's shared pid namespace.
func (m *Manager) holderCgroup(p *Pod) (string, error) {
	return spec.HolderCgroupsPath(spec.Pod{ID: p.ID, CgroupParent: p.CgroupParent, SystemdCgroup: m.opts.SystemdCgroup})
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return string(bytes.TrimSpace(b))
}

// call makes one supervisor call with a deadline (2 minutes unless ctx
// has a shorter one). A method added after version 1 is only sent to a
// supervisor whose Hello names its feature: one started by an older
// runclet fails it with FailedPrecondition without being called.
func (m *Manager) call(ctx context.Context, podID, method string, params, result any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if f := proto.FeatureOf(method); f != "" {
		h, err := m.hello(ctx, podID)
		if err != nil {
			return err
		}
		if !h.Supports(f) {
			return errdefs.FailedPrecondition("the supervisor of pod %s (contract version %d) does not support %s: an older runclet started it; the pod must be recreated", podID, h.Version, method)
		}
	}
	return proto.Call(ctx, m.l.supervisorSocket(podID), method, params, result)
}

// hello asks the pod's supervisor who it is and what it supports. A
// supervisor lives as long as its pod and is never upgraded in place, so
// its answer is kept (without the pid) until the pod is removed.
func (m *Manager) hello(ctx context.Context, podID string) (proto.HelloResult, error) {
	if h, ok := m.hellos.Load(podID); ok {
		return h.(proto.HelloResult), nil
	}
	var h proto.HelloResult
	if err := proto.Call(ctx, m.l.supervisorSocket(podID), proto.MethodHello, nil, &h); err != nil {
		return h, err
	}
	if h.PodID != podID {
		return h, errdefs.Unavailable("the supervisor at %s answers for pod %q, not %s", m.l.supervisorSocket(podID), h.PodID, podID)
	}
	h.Pid = 0
	m.hellos.Store(podID, h)
	return h, nil
}

// SupervisorAlive asks the pod's supervisor who it is: false when it is
// gone (crashed, killed) or answers for another pod.
func (m *Manager) SupervisorAlive(ctx context.Context, podID string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var h proto.HelloResult
	return proto.Call(ctx, m.l.supervisorSocket(podID), proto.MethodHello, nil, &h) == nil && h.PodID == podID
}

// destroyContainers runs `stage1-runc destroy` for apps of a pod whose
// supervisor is gone: stage1 kills what is left in their cgroups and
// removes the cgroups and libcontainer state, as the supervisor would have.
func (m *Manager) destroyContainers(podID string, apps ...*App) error {
	return m.destroy(proto.DestroyArgs{}, podID, apps...)
}

// destroy runs `stage1-runc destroy` with args completed by the layout,
// the cgroup driver and apps.
func (m *Manager) destroy(args proto.DestroyArgs, podID string, apps ...*App) error {
	args.StateRoot, args.SystemdCgroup = m.l.StateRoot(), m.opts.SystemdCgroup
	for _, a := range apps {
		args.Containers = append(args.Containers, proto.DestroyContainer{ID: a.ID, Bundle: m.l.Bundle(podID, a.ID)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.opts.Stage1Path, append([]string{"destroy"}, args.Args()...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("destroy the containers of pod %s: %w: %s", podID, err, bytes.TrimSpace(out))
	}
	return nil
}

// containersLeft says whether any of apps still has libcontainer state
// (libcontainer makes the state directory before the cgroup, and removes
// it last).
func (m *Manager) containersLeft(apps ...*App) bool {
	for _, a := range apps {
		if _, err := os.Lstat(filepath.Join(m.l.StateRoot(), a.ID)); err == nil {
			return true
		}
	}
	return false
}
