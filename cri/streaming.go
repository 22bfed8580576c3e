package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
)

// execSyncLimit caps each of ExecSync's captured streams, as the CRI asks
// (CVE-2022-1708): the rest is discarded and the command goes on.
const execSyncLimit = 16 << 20

// cappedBuffer keeps the first limit bytes written to it and swallows the
// rest without error, so the command is never blocked or failed by it.
type cappedBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *cappedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf
}

// runningContainer resolves a container that must be running.
func (s *Server) runningContainer(id string) (*containerEntry, error) {
	if err := validateID("container ID", id); err != nil {
		return nil, err
	}
	c, err := s.idx.container(id)
	if err != nil {
		return nil, err
	}
	if c.app.State != pod.AppRunning {
		return nil, errdefs.FailedPrecondition("container %s is %s, not running", c.app.ID, c.app.State)
	}
	return c, nil
}

// ExecSync runs a command in a container and returns its output (16 MiB
// at most per stream) and exit code. With a timeout, a command that
// outlives it is an error of code DeadlineExceeded (what kubelet's exec
// probes look for).
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	c, err := s.runningContainer(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if len(req.Cmd) == 0 {
		return nil, invalid("exec: a command is required")
	}
	if req.Timeout < 0 {
		return nil, invalid("exec: timeout %d must not be negative", req.Timeout)
	}
	timeout := time.Duration(req.Timeout) * time.Second
	ectx := ctx
	if timeout > 0 {
		// The supervisor kills the command at the timeout and says so;
		// this deadline only guards against a supervisor that does not.
		var cancel context.CancelFunc
		ectx, cancel = context.WithTimeout(ctx, timeout+5*time.Second)
		defer cancel()
	}
	stdout, stderr := &cappedBuffer{limit: execSyncLimit}, &cappedBuffer{limit: execSyncLimit}
	code, err := s.rt.Exec(ectx, c.app.PodID, c.app.ID, pod.ExecConfig{Cmd: req.Cmd, Timeout: timeout},
		pod.Streams{Stdout: stdout, Stderr: stderr})
	if err != nil {
		if errors.Is(err, errdefs.ErrDeadlineExceeded) {
			return nil, status.Errorf(codes.DeadlineExceeded, "command %q in container %s timed out after %s", req.Cmd, c.app.ID, timeout)
		}
		if timeout > 0 && ctx.Err() == nil && errors.Is(ectx.Err(), context.DeadlineExceeded) {
			return nil, status.Errorf(codes.DeadlineExceeded, "command %q in container %s timed out after %s", req.Cmd, c.app.ID, timeout)
		}
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.bytes(), Stderr: stderr.bytes(), ExitCode: int32(code)}, nil
}

// Exec returns the URL of a streaming exec session.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if _, err := s.runningContainer(req.ContainerId); err != nil {
		return nil, err
	}
	if len(req.Cmd) == 0 {
		return nil, invalid("exec: a command is required")
	}
	return s.stream.GetExec(req)
}

// Attach returns the URL of a streaming attach session.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if _, err := s.runningContainer(req.ContainerId); err != nil {
		return nil, err
	}
	return s.stream.GetAttach(req)
}

// PortForward returns the URL of a streaming port-forward session.
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, ctrs, err := s.idx.sandbox(req.PodSandboxId)
	if err != nil {
		return nil, err
	}
	if sandboxState(p, ctrs) != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, errdefs.FailedPrecondition("pod sandbox %s is not ready", p.ID)
	}
	for _, port := range req.Port {
		if port <= 0 || port > 65535 {
			return nil, invalid("port %d is out of range", port)
		}
	}
	req.PodSandboxId = p.ID
	return s.stream.GetPortForward(req)
}

// ReopenContainerLog makes the supervisor reopen a running container's
// log file after kubelet rotated it.
func (s *Server) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, err := s.runningContainer(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := s.rt.ReopenLog(ctx, c.app.PodID, c.app.ID); err != nil {
		return nil, err
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}

// streamRuntime is what the streaming server calls once a client has
// connected to a URL the RPCs above handed out.
type streamRuntime struct{ s *Server }

func streams(in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, done <-chan struct{}) pod.Streams {
	st := pod.Streams{Stdin: in, Tty: tty}
	if out != nil {
		st.Stdout = out
	}
	if errw != nil {
		st.Stderr = errw
	}
	if resize != nil {
		sizes := make(chan pod.Size)
		st.Resize = sizes
		go func() {
			defer close(sizes)
			for {
				select {
				case sz, ok := <-resize:
					if !ok {
						return
					}
					select {
					case sizes <- pod.Size{Width: sz.Width, Height: sz.Height}:
					case <-done:
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	return st
}

func (r *streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := r.s.idx.container(containerID)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	code, err := r.s.rt.Exec(ctx, c.app.PodID, c.app.ID, pod.ExecConfig{Cmd: cmd}, streams(in, out, errw, tty, resize, done))
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

func (r *streamRuntime) Attach(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := r.s.idx.container(containerID)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	_, err = r.s.rt.Attach(ctx, c.app.PodID, c.app.ID, streams(in, out, errw, tty, resize, done))
	return err
}

func (r *streamRuntime) PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	p, _, err := r.s.idx.sandbox(podSandboxID)
	if err != nil {
		return err
	}
	return r.s.rt.PortForward(ctx, p.NetNS, port, stream)
}
