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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// supervisorSocket is where a pod's supervisor listens (the contract
// fixes the name inside the pod's run dir).
func (l Layout) supervisorSocket(id string) string {
	return filepath.Join(l.RunDir(id), "supervisor.sock")
}

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
	args := []string{"supervise", "--pod-id", p.ID, "--flavor", p.Flavor,
		"--run-dir", m.l.RunDir(p.ID), "--state-root", m.l.StateRoot(), "--ready-fd", "3",
		"--max-log-line", strconv.Itoa(m.opts.MaxLogLine)}
	if m.opts.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	if p.PIDNS != "" {
		cg, err := m.holderCgroup(p)
		if err != nil {
			return err
		}
		args = append(args, "--holder-cgroup", cg)
		if p.IDMap == nil {
			args = append(args, "--pid-ns", p.PIDNS)
		} else if pid := readPidFile(filepath.Join(m.l.RunDir(p.ID), "pidns-init.pid")); pid > 0 {
			// With a user namespace, the ns-holder stage0 started holds it.
			args = append(args, "--holder-pid", strconv.Itoa(pid))
		}
	}
	if p.ExitWithApps && len(m.opts.ExitCommand) > 0 {
		args = append(args, "--exit-command", m.opts.ExitCommand[0])
		for _, a := range append(slices.Clone(m.opts.ExitCommand[1:]), p.ID) {
			args = append(args, "--exit-command-arg", a)
		}
	}
	cmd := exec.Command(m.opts.Stage1Path, args...)
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

// call makes one supervisor call with a deadline.
func (m *Manager) call(ctx context.Context, podID, method string, params, result any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return proto.Call(ctx, m.l.supervisorSocket(podID), method, params, result)
}

// SupervisorAlive asks the pod's supervisor who it is: false when it is
// gone (crashed, killed) or answers for another pod.
func (m *Manager) SupervisorAlive(ctx context.Context, podID string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var h proto.HelloResult
	return proto.Call(ctx, m.l.supervisorSocket(podID), proto.MethodHello, nil, &h) == nil && h.PodID == podID
}
