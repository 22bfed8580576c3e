package cri

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// WebSocket support that k8s.io/cri-streaming lacks.
//
// cri-streaming serves exec and attach over SPDY and over WebSocket with
// the channel.k8s.io protocols v1 to v4, and port-forward over SPDY and
// the old WebSocket protocol. client-go (kubectl, critest) speaks other
// WebSocket protocols:
//
//   - exec and attach: "v5.channel.k8s.io", which is v4 (the error
//     channel carries a JSON metav1.Status, channel 4 carries resizes)
//     plus a stream-close signal (a message [255, channel] half-closes
//     the client's side of that channel, e.g. stdin at its end);
//   - port-forward: "SPDY/3.1+portforward.k8s.io", the SPDY port-forward
//     protocol tunnelled through a WebSocket, each SPDY write a binary
//     message, with no HTTP upgrade inside the tunnel.
//
// wsServer sits in front of cri-streaming's server and serves these two
// itself: v5 sessions through the same streaming.Runtime calls
// cri-streaming makes, tunnels by handing cri-streaming's own SPDY
// port-forward server a request and a response writer whose upgrade
// becomes the WebSocket tunnel. Everything else goes to cri-streaming.
//
// The URLs are cri-streaming's; wsServer keeps the request behind each
// URL's token too, so it can serve the session without cri-streaming. It
// consumes its copy for every request (so a token is good for one
// session, whichever server serves it) and drops it after
// streamTokenTTL, as cri-streaming does with its own.

const (
	// v5Protocol is the remote command protocol with the close signal.
	v5Protocol = "v5.channel.k8s.io"
	// tunnelPrefix prefixes an SPDY protocol tunnelled through a WebSocket.
	tunnelPrefix = "SPDY/3.1+"
	// streamTokenTTL is how long a streaming URL can be used (as cri-streaming's).
	streamTokenTTL = time.Minute
	// statusWriteTimeout bounds writing the final status of a session.
	statusWriteTimeout = 10 * time.Second
)

// The channels of the remote command protocols.
const (
	chanStdin = iota
	chanStdout
	chanStderr
	chanError
	chanResize
)

// wsServer is a streaming.Server: cri-streaming's, with the WebSocket
// protocols above served in front of it.
type wsServer struct {
	streaming.Server // URL issuing, Start, Stop; and what ServeHTTP passes on

	rt   streaming.Runtime
	idle time.Duration
	log  *slog.Logger

	mu     sync.Mutex
	now    func() time.Time       // the clock, for tests
	tokens map[string]streamToken // by URL path: "/exec/<token>"
}

type streamToken struct {
	req     any // *runtimeapi.ExecRequest, AttachRequest or PortForwardRequest
	expires time.Time
}

func newWSServer(inner streaming.Server, rt streaming.Runtime, idle time.Duration, log *slog.Logger) *wsServer {
	return &wsServer{Server: inner, rt: rt, idle: idle, log: log,
		now: time.Now, tokens: map[string]streamToken{}}
}

// remember keeps req under the path of the URL cri-streaming made for it.
func (s *wsServer) remember(rawURL string, req any) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("streaming URL %q: %w", rawURL, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, k)
		}
	}
	s.tokens[u.Path] = streamToken{req: req, expires: now.Add(streamTokenTTL)}
	return nil
}

// consume returns and forgets the request behind path, if it is there
// and has not expired.
func (s *wsServer) consume(path string) (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[path]
	if !ok {
		return nil, false
	}
	delete(s.tokens, path)
	if s.now().After(t.expires) {
		return nil, false
	}
	return t.req, true
}

func (s *wsServer) GetExec(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	resp, err := s.Server.GetExec(req)
	if err != nil {
		return nil, err
	}
	return resp, s.remember(resp.Url, req)
}

func (s *wsServer) GetAttach(req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	resp, err := s.Server.GetAttach(req)
	if err != nil {
		return nil, err
	}
	return resp, s.remember(resp.Url, req)
}

func (s *wsServer) GetPortForward(req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	resp, err := s.Server.GetPortForward(req)
	if err != nil {
		return nil, err
	}
	return resp, s.remember(resp.Url, req)
}

// ServeHTTP checks the URL's token, then serves the session or passes it on.
func (s *wsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		s.Server.ServeHTTP(w, r) // cri-streaming answers 405 without using the token
		return
	}
	req, ok := s.consume(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch req := req.(type) {
	case *runtimeapi.ExecRequest:
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
			s.serveV5(w, r, "exec", req.ContainerId, req.Cmd, req.Stdin, req.Stdout, req.Stderr, req.Tty)
			return
		}
	case *runtimeapi.AttachRequest:
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
			s.serveV5(w, r, "attach", req.ContainerId, nil, req.Stdin, req.Stdout, req.Stderr, req.Tty)
			return
		}
	case *runtimeapi.PortForwardRequest:
		if wsstream.IsWebSocketRequestWithTunnelingProtocol(r) {
			s.serveTunnel(w, r)
			return
		}
	}
	s.Server.ServeHTTP(w, r)
}

// serveV5 serves an exec (cmd set) or an attach over v5.channel.k8s.io.
func (s *wsServer) serveV5(w http.ResponseWriter, r *http.Request, kind, containerID string, cmd []string, stdin, stdout, stderr, tty bool) {
	log := s.log.With("session", kind, "container", containerID, "protocol", v5Protocol)
	channels := make([]wsstream.ChannelType, 5)
	channels[chanStdin] = wsstream.IgnoreChannel
	if stdin {
		channels[chanStdin] = wsstream.ReadChannel
	}
	channels[chanStdout] = wsstream.IgnoreChannel
	if stdout {
		channels[chanStdout] = wsstream.WriteChannel
	}
	channels[chanStderr] = wsstream.IgnoreChannel
	if stderr {
		channels[chanStderr] = wsstream.WriteChannel
	}
	channels[chanError] = wsstream.WriteChannel
	channels[chanResize] = wsstream.ReadChannel
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		v5Protocol: {Binary: true, Channels: channels},
	})
	conn.SetIdleTimeout(s.idle)
	_, chans, err := conn.Open(w, r)
	if err != nil {
		log.Warn("websocket upgrade failed", "err", err)
		return
	}
	defer conn.Close()

	// An empty message on the first channel the client reads tells it
	// the session is up (what every channel.k8s.io server does).
	first := chanError
	if stdout {
		first = chanStdout
	} else if stderr {
		first = chanStderr
	}
	if _, err := chans[first].Write(nil); err != nil {
		log.Warn("websocket session start", "err", err)
		return
	}

	var in io.Reader
	var out, errw io.WriteCloser
	if stdin {
		in = chans[chanStdin]
	}
	if stdout {
		out = chans[chanStdout]
	}
	if stderr {
		errw = chans[chanStderr]
	}
	done := make(chan struct{})
	defer close(done)
	var resize chan remotecommand.TerminalSize
	if tty {
		resize = make(chan remotecommand.TerminalSize)
		go readResizes(chans[chanResize], resize, done)
	}

	var st wsStatus
	if kind == "exec" {
		err = s.rt.Exec(r.Context(), containerID, cmd, in, out, errw, tty, resize)
		st = execStatus(err)
	} else {
		err = s.rt.Attach(r.Context(), containerID, in, out, errw, tty, resize)
		if err != nil {
			err = fmt.Errorf("error attaching to container: %w", err)
		}
		st = errStatus(err)
	}
	if err != nil && st.Reason != reasonNonZeroExit {
		log.Warn("websocket session failed", "err", err)
	}
	b, err := json.Marshal(st)
	if err == nil {
		conn.SetWriteDeadline(statusWriteTimeout)
		_, err = chans[chanError].Write(b)
	}
	if err != nil {
		log.Debug("writing the session's status", "err", err)
	}
}

// readResizes decodes the JSON terminal sizes the client sends on the
// resize channel until it ends or the session does.
func readResizes(r io.Reader, sizes chan<- remotecommand.TerminalSize, done <-chan struct{}) {
	defer close(sizes)
	dec := json.NewDecoder(r)
	for {
		var sz remotecommand.TerminalSize
		if err := dec.Decode(&sz); err != nil {
			return
		}
		select {
		case sizes <- sz:
		case <-done:
			return
		}
	}
}

// wsStatus is the metav1.Status the v4 and v5 protocols write on the
// error channel when the session ends.
type wsStatus struct {
	Status  string           `json:"status,omitempty"`
	Message string           `json:"message,omitempty"`
	Reason  string           `json:"reason,omitempty"`
	Details *wsStatusDetails `json:"details,omitempty"`
	Code    int32            `json:"code,omitempty"`
}

type wsStatusDetails struct {
	Causes []wsStatusCause `json:"causes,omitempty"`
}

type wsStatusCause struct {
	Type    string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

const reasonNonZeroExit = "NonZeroExitCode"

// execStatus is the status of an exec that ended with err: the exit
// code for a command that exited non-zero.
func execStatus(err error) wsStatus {
	var exit utilexec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return wsStatus{
			Status:  "Failure",
			Reason:  reasonNonZeroExit,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", exit),
			Details: &wsStatusDetails{Causes: []wsStatusCause{{Type: "ExitCode", Message: fmt.Sprint(exit.ExitStatus())}}},
		}
	}
	if err != nil {
		err = fmt.Errorf("error executing command in container: %w", err)
	}
	return errStatus(err)
}

func errStatus(err error) wsStatus {
	if err == nil {
		return wsStatus{Status: "Success"}
	}
	return wsStatus{
		Status:  "Failure",
		Reason:  "InternalError",
		Message: fmt.Sprintf("Internal error occurred: %v", err),
		Code:    http.StatusInternalServerError,
	}
}

// serveTunnel serves port-forward tunnelled through a WebSocket: it
// hands cri-streaming the request as the SPDY upgrade it would be
// without the tunnel, with a response writer that, when cri-streaming
// switches protocols, upgrades the WebSocket instead and gives the
// tunnel as the hijacked connection. An error before the upgrade is
// answered as plain HTTP, as a failed WebSocket handshake.
func (s *wsServer) serveTunnel(w http.ResponseWriter, r *http.Request) {
	spdyReq := r.Clone(r.Context())
	h := spdyReq.Header
	var protocols []string
	for _, p := range websocket.Subprotocols(r) {
		if p, ok := strings.CutPrefix(p, tunnelPrefix); ok {
			protocols = append(protocols, p)
		}
	}
	for _, k := range []string{"Sec-Websocket-Protocol", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", httpstream.HeaderProtocolVersion} {
		h.Del(k)
	}
	h.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
	h.Set(httpstream.HeaderUpgrade, spdy.HeaderSpdy31)
	for _, p := range protocols {
		h.Add(httpstream.HeaderProtocolVersion, p)
	}
	tw := &tunnelWriter{w: w, r: r, header: http.Header{}, log: s.log}
	s.Server.ServeHTTP(tw, spdyReq)
	if tw.conn != nil {
		tw.conn.Close() // cri-streaming closed it already, unless the upgrade failed after
	}
}

// tunnelWriter is the response writer cri-streaming's SPDY port-forward
// server writes to. The 101 it writes upgrades the WebSocket (with the
// negotiated protocol, tunnel-prefixed) and is not sent on: the client
// starts SPDY right after the WebSocket handshake. Any other status is
// passed on as it is.
type tunnelWriter struct {
	w      http.ResponseWriter
	r      *http.Request
	header http.Header
	log    *slog.Logger

	wroteHeader bool
	conn        *tunnelConn // after the upgrade
	upgradeErr  error
}

func (t *tunnelWriter) Header() http.Header { return t.header }

func (t *tunnelWriter) WriteHeader(code int) {
	if t.wroteHeader {
		return
	}
	t.wroteHeader = true
	if code != http.StatusSwitchingProtocols {
		for k, v := range t.header {
			t.w.Header()[k] = v
		}
		t.w.WriteHeader(code)
		return
	}
	var protocols []string
	if p := t.header.Get(httpstream.HeaderProtocolVersion); p != "" {
		protocols = []string{tunnelPrefix + p}
	}
	up := websocket.Upgrader{
		Subprotocols: protocols,
		// Like cri-streaming's WebSocket server: the URL's token is the
		// only credential, whatever page the request comes from.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	ws, err := up.Upgrade(t.w, t.r, nil) // answers the client itself on failure
	if err != nil {
		t.log.Warn("port-forward websocket upgrade failed", "err", err)
		t.upgradeErr = err
		return
	}
	t.conn = &tunnelConn{ws: ws}
}

func (t *tunnelWriter) Write(p []byte) (int, error) {
	if !t.wroteHeader {
		t.WriteHeader(http.StatusOK)
	}
	if t.conn != nil || t.upgradeErr != nil {
		return 0, http.ErrHijacked
	}
	return t.w.Write(p)
}

func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	switch {
	case t.conn != nil:
		return t.conn, bufio.NewReadWriter(bufio.NewReader(t.conn), bufio.NewWriter(t.conn)), nil
	case t.upgradeErr != nil:
		return nil, nil, t.upgradeErr
	default:
		return nil, nil, errors.New("hijack before switching protocols")
	}
}

// tunnelConn is a WebSocket as a net.Conn: each Write a binary message,
// Read the messages' bytes in order.
type tunnelConn struct {
	ws *websocket.Conn

	r         io.Reader // the message being read
	wmu       sync.Mutex
	closeOnce sync.Once
	closeErr  error
}

func (c *tunnelConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, fmt.Errorf("port-forward tunnel: unexpected websocket message type %d", typ)
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close says goodbye (a normal closure) and closes the connection.
func (c *tunnelConn) Close() error {
	c.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

func (c *tunnelConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *tunnelConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *tunnelConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
func (c *tunnelConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
