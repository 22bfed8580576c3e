package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	clientrc "k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	clientexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	streamhttp "k8s.io/streaming/pkg/httpstream"
	utilexec "k8s.io/utils/exec"
)

// scriptRuntime is a streaming.Runtime whose sessions the test scripts.
type scriptRuntime struct {
	exec   func(cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error
	attach func(in io.Reader, out, errw io.WriteCloser) error

	mu    sync.Mutex
	ports []int32
}

func (r *scriptRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return r.exec(cmd, in, out, errw, tty, resize)
}

func (r *scriptRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return r.attach(in, out, errw)
}

// PortForward echoes the stream back, prefixed with the port.
func (r *scriptRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	r.mu.Lock()
	r.ports = append(r.ports, port)
	r.mu.Unlock()
	defer stream.Close()
	fmt.Fprintf(stream, "%d:", port)
	_, err := io.Copy(stream, stream)
	return err
}

// startWSServer serves a wsServer over cri-streaming over rt on loopback.
func startWSServer(t *testing.T, rt streaming.Runtime) *wsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = ln.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	inner, err := streaming.NewServer(cfg, rt)
	if err != nil {
		t.Fatal(err)
	}
	s := newWSServer(inner, rt, time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := &http.Server{Handler: s}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func wsExec(t *testing.T, rawURL string, protocols []string, opts clientrc.StreamOptions) error {
	t.Helper()
	var e clientrc.Executor
	var err error
	if protocols == nil {
		e, err = clientrc.NewWebSocketExecutor(&rest.Config{}, "GET", rawURL) // v5 only, as kubectl and critest
	} else {
		e, err = clientrc.NewWebSocketExecutorForProtocols(&rest.Config{}, "GET", rawURL, protocols...)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.StreamWithContext(ctx, opts)
}

func spdyExec(t *testing.T, rawURL string, opts clientrc.StreamOptions) error {
	t.Helper()
	u, _ := url.Parse(rawURL)
	e, err := clientrc.NewSPDYExecutor(&rest.Config{}, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.StreamWithContext(ctx, opts)
}

func exitCode(err error) int {
	var exit clientexec.CodeExitError
	if errors.As(err, &exit) {
		return exit.Code
	}
	return -1
}

// catRuntime's exec echoes stdin to stdout until stdin ends (which over
// v5 takes the close signal), writes to stderr and exits with the
// command's length.
func catRuntime() *scriptRuntime {
	return &scriptRuntime{exec: func(cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
		if in != nil {
			if _, err := io.Copy(out, in); err != nil {
				return err
			}
		}
		if errw != nil {
			fmt.Fprintf(errw, "ran %v", cmd)
		}
		if len(cmd) == 1 {
			return nil
		}
		return utilexec.CodeExitError{Err: errors.New("exit"), Code: len(cmd)}
	}}
}

func TestWSExecV5(t *testing.T) {
	s := startWSServer(t, catRuntime())
	resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"cat", "-"}, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &errOut})
	if exitCode(err) != 2 || out.String() != "hello\n" || errOut.String() != "ran [cat -]" {
		t.Fatalf("err %v (code %d), stdout %q, stderr %q", err, exitCode(err), out.String(), errOut.String())
	}
	// The token was used: any second use is refused.
	err = wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
	if err == nil {
		t.Fatal("a used exec URL worked again over websocket")
	}
	if err := spdyExec(t, resp.Url, clientrc.StreamOptions{Stdout: &out}); err == nil {
		t.Fatal("a used exec URL worked again over SPDY")
	}

	// Exit 0, no stdin, stdout only.
	resp, _ = s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"true"}, Stdout: true})
	out.Reset()
	if err := wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdout: &out}); err != nil {
		t.Fatalf("exec exiting 0: %v", err)
	}
}

func TestWSExecV5ErrorAndResize(t *testing.T) {
	rt := &scriptRuntime{exec: func(cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
		if cmd[0] == "fail" {
			return errors.New("no such file")
		}
		if !tty || resize == nil || errw != nil || in != nil {
			return fmt.Errorf("tty %v, resize %v, stderr %v, stdin %v", tty, resize != nil, errw != nil, in != nil)
		}
		for sz := range resize {
			fmt.Fprintf(out, "%dx%d;", sz.Width, sz.Height)
			if sz.Width == 0 {
				break
			}
		}
		return nil
	}}
	s := startWSServer(t, rt)
	resp, _ := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"fail"}, Stdout: true})
	err := wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "no such file") || exitCode(err) != -1 {
		t.Fatalf("failed exec: %v", err)
	}

	resp, _ = s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"sh"}, Stdout: true, Tty: true})
	var out bytes.Buffer
	sizes := &sizeQueue{sizes: []clientrc.TerminalSize{{Width: 80, Height: 24}, {Width: 120, Height: 40}, {}}}
	if err := wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdout: &out, Tty: true, TerminalSizeQueue: sizes}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "80x24;120x40;0x0;" {
		t.Fatalf("resizes seen: %q", out.String())
	}
}

type sizeQueue struct {
	mu    sync.Mutex
	sizes []clientrc.TerminalSize
}

func (q *sizeQueue) Next() *clientrc.TerminalSize {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.sizes) == 0 {
		return nil
	}
	sz := q.sizes[0]
	q.sizes = q.sizes[1:]
	return &sz
}

func TestWSAttachV5(t *testing.T) {
	rt := &scriptRuntime{attach: func(in io.Reader, out, errw io.WriteCloser) error {
		fmt.Fprint(out, "attached;")
		_, err := io.Copy(out, in)
		fmt.Fprint(errw, "detached")
		return err
	}}
	s := startWSServer(t, rt)
	resp, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1", Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdin: strings.NewReader("echo hello\n"), Stdout: &out, Stderr: &errOut})
	if err != nil || out.String() != "attached;echo hello\n" || errOut.String() != "detached" {
		t.Fatalf("attach: %v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}

	rt.attach = func(in io.Reader, out, errw io.WriteCloser) error { return errors.New("app exited") }
	resp, _ = s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1", Stdout: true})
	err = wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdout: &out})
	if err == nil || !strings.Contains(err.Error(), "app exited") {
		t.Fatalf("failed attach: %v", err)
	}
}

// Older WebSocket protocols, SPDY, bad and expired tokens go to
// cri-streaming (or are refused) as before.
func TestWSPassesOnWhatCRIStreamingServes(t *testing.T) {
	s := startWSServer(t, catRuntime())
	req := &runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"cat", "-"}, Stdin: true, Stdout: true, Stderr: true}

	// v4 has no way to end stdin: no stdin there.
	resp, _ := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"cat", "-"}, Stdout: true, Stderr: true})
	var out, errOut bytes.Buffer
	err := wsExec(t, resp.Url, []string{"v4.channel.k8s.io"}, clientrc.StreamOptions{Stdout: &out, Stderr: &errOut})
	if exitCode(err) != 2 || errOut.String() != "ran [cat -]" {
		t.Fatalf("v4 websocket exec: %v, stderr %q", err, errOut.String())
	}

	resp, _ = s.GetExec(req)
	out.Reset()
	errOut.Reset()
	err = spdyExec(t, resp.Url, clientrc.StreamOptions{Stdin: strings.NewReader("spdy\n"), Stdout: &out, Stderr: &errOut})
	if exitCode(err) != 2 || out.String() != "spdy\n" || errOut.String() != "ran [cat -]" {
		t.Fatalf("SPDY exec: %v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}

	for name, rawURL := range map[string]string{
		"unknown token": strings.Replace(resp.Url, "/exec/", "/exec/x", 1),
		"attach token as exec": func() string {
			a, _ := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1", Stdout: true})
			return strings.Replace(a.Url, "/attach/", "/exec/", 1)
		}(),
	} {
		r, err := http.Get(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s", name, r.Status)
		}
	}

	resp, _ = s.GetExec(req)
	s.mu.Lock()
	s.now = func() time.Time { return time.Now().Add(streamTokenTTL + time.Second) }
	s.mu.Unlock()
	if err := wsExec(t, resp.Url, nil, clientrc.StreamOptions{Stdout: &out}); err == nil {
		t.Fatal("an expired exec URL worked")
	}
	s.mu.Lock()
	n := len(s.tokens)
	s.mu.Unlock()
	s.GetExec(req) // drops what expired
	s.mu.Lock()
	defer s.mu.Unlock()
	if n != 1 || len(s.tokens) != 1 {
		t.Fatalf("tokens kept: %d before, %d after an insert", n, len(s.tokens))
	}
}

// forward runs a client-go port-forwarder through dialer and returns the
// local port of the pod's port 8080.
func forward(t *testing.T, dialer streamhttp.Dialer) int {
	t.Helper()
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	t.Cleanup(func() {
		close(stop)
		<-errc
	})
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port-forward: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("port-forward not ready")
	}
	ports, err := pf.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	return int(ports[0].Local)
}

func echoThrough(t *testing.T, port int, msg string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if want := "8080:" + msg; err != nil || string(got) != want {
		t.Fatalf("through port-forward: %q, %v; want %q", got, err, want)
	}
}

func TestWSPortForwardTunnel(t *testing.T) {
	rt := &scriptRuntime{}
	s := startWSServer(t, rt)
	resp, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p1", Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(resp.Url)
	dialer, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, &rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	port := forward(t, dialer)
	echoThrough(t, port, "hello")
	echoThrough(t, port, strings.Repeat("big", 100000)) // many SPDY frames, many messages

	// A used token is refused as an HTTP error, before any upgrade.
	if _, _, err := dialer.Dial("portforward.k8s.io"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("second tunnel on a used URL: %v", err)
	}
	// A protocol cri-streaming does not know is refused by its handshake.
	resp, _ = s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p1"})
	u, _ = url.Parse(resp.Url)
	d2, _ := portforward.NewSPDYOverWebsocketDialerForStreaming(u, &rest.Config{})
	if _, _, err := d2.Dial("nope.k8s.io"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("tunnel with an unknown protocol: %v", err)
	}

	// SPDY port-forward is cri-streaming's, as before.
	resp, _ = s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p1"})
	u, _ = url.Parse(resp.Url)
	tr, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	echoThrough(t, forward(t, spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: tr}, "POST", u)), "spdy")
}

// Through the whole server: the Exec RPC's URL, a v5 session, the
// runtime's exec with its exit code.
func TestWSExecThroughServer(t *testing.T) {
	ts := startServer(t, newReal(t))
	ctx := context.Background()
	podID := ts.runPod(t, realSandboxConfig(t, "web"))
	id := ts.createCtr(t, podID, sleeperConfig("app"))
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	// The process in the app reads stdin to its end, says what it read and
	// exits 42.
	cmd := []string{"sh", "-c", `printf '[cat] read "%s"' "$(cat)"; exit 42`}
	e, err := ts.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Stdin: true, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = wsExec(t, e.Url, nil, clientrc.StreamOptions{Stdin: strings.NewReader("in"), Stdout: &out})
	if exitCode(err) != 42 || out.String() != `[cat] read "in"` {
		t.Fatalf("exec: %v, stdout %q", err, out.String())
	}
}
