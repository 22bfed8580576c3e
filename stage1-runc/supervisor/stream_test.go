package supervisor

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/stage1-runc/proto"
	"github.com/runclet/runclet/tty/stream"
)

// sessionResult is what one Exec or Attach stream brought.
type sessionResult struct {
	stdout, stderr string
	code           int
	msg            string
	exited         bool
	err            error
}

// session runs one Exec or Attach on the rig's socket: sends a resize and
// stdin (then closes it), and collects output until Exit or the end.
func (r *podRig) session(ctx context.Context, method string, params any, stdin string, resize bool) sessionResult {
	r.t.Helper()
	conn, br, err := proto.Dial(ctx, proto.SocketPath(r.runDir), method, params)
	if err != nil {
		return sessionResult{err: err}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := proto.ReadResponse(br, nil); err != nil {
		return sessionResult{err: err}
	}
	if resize {
		stream.WriteFrame(conn, stream.Resize, stream.EncodeResize(100, 40))
	}
	if stdin != "" {
		stream.WriteFrame(conn, stream.Stdin, []byte(stdin))
		stream.WriteFrame(conn, stream.StdinClose, nil)
	}
	var res sessionResult
	var out, errOut bytes.Buffer
	res.err = stream.Demux(br, stream.Handlers{Stdout: &out, Stderr: &errOut,
		Exit: func(c int, m string) { res.code, res.msg, res.exited = c, m, true }})
	res.stdout, res.stderr = out.String(), errOut.String()
	return res
}

// Exec runs processes in a running app with pipes, a terminal, stdin and
// a timeout; attach sees the app's output; updates change its cgroup.
func TestExecAttachAndUpdate(t *testing.T) {
	r := newPodRig(t)
	r.addApp("web", "sh", "-c", "while :; do echo tick; sleep 0.2; done")
	if err := r.call(proto.MethodStartApp, proto.NameParams{Name: "web"}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res := r.session(ctx, proto.MethodExec, proto.ExecParams{Name: "web", Args: []string{"sh", "-c", "read x; echo out $x $E; echo err >&2; exit 5"}, Env: []string{"E=env"}, Stdin: true}, "in\n", false)
	if res.err != nil || !res.exited || res.code != 5 || res.stdout != "out in env\n" || res.stderr != "err\n" {
		t.Fatalf("exec: %+v", res)
	}
	res = r.session(ctx, proto.MethodExec, proto.ExecParams{Name: "web", Args: []string{"sh", "-c", "sleep 0.3; stty size"}, Tty: true, Width: 80, Height: 24}, "", true)
	if res.err != nil || res.code != 0 || !strings.Contains(res.stdout, "40 100") {
		t.Fatalf("exec with a tty resized to 100x40: %+v", res)
	}
	res = r.session(ctx, proto.MethodExec, proto.ExecParams{Name: "web", Args: []string{"sleep", "60"}, Timeout: 300 * time.Millisecond}, "", false)
	if res.code != 137 || res.msg != "timeout" {
		t.Fatalf("exec past its timeout: %+v", res)
	}
	res = r.session(ctx, proto.MethodExec, proto.ExecParams{Name: "nope", Args: []string{"true"}}, "", false)
	if !errdefs.IsNotFound(res.err) {
		t.Fatalf("exec in no app: %+v", res)
	}
	res = r.session(ctx, proto.MethodExec, proto.ExecParams{Name: "web", Args: []string{"/no/such/program"}}, "", false)
	if res.err == nil && res.code == 0 {
		t.Fatalf("exec of a missing program: %+v", res)
	}

	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	res = r.session(actx, proto.MethodAttach, proto.AttachParams{Name: "web", Stdout: true, Stderr: true}, "", false)
	if !strings.Contains(res.stdout, "tick") {
		t.Fatalf("attach: %+v", res)
	}
	if res := r.session(ctx, proto.MethodAttach, proto.AttachParams{Name: "nope", Stdout: true}, "", false); !errdefs.IsNotFound(res.err) {
		t.Fatalf("attach to no app: %+v", res)
	}

	limit := int64(128 << 20)
	if err := r.call(proto.MethodUpdateApp, proto.UpdateAppParams{Name: "web", Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}}, nil); err != nil {
		t.Fatalf("update: %v", err)
	}
	var stats proto.StatsResult
	if err := r.call(proto.MethodStats, nil, &stats); err != nil || len(stats.Apps) != 1 {
		t.Fatalf("stats: %+v %v", stats, err)
	}
}
