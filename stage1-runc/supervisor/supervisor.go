// Package supervisor is the per-pod supervisor: one detached process per
// pod that creates, starts, stops and removes the pod's apps through
// libcontainer, owns their stdio, writes their CRI logs, and records each
// exit the moment it happens. stage0 talks to it over a unix socket with
// the messages of package proto; docs/stage1-contract.md is the contract.
package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/internal/unixsock"
	"github.com/runclet/runclet/stage1-runc/container"
	"github.com/runclet/runclet/stage1-runc/proto"
)

type supervisor struct {
	opts proto.SuperviseArgs
	copt container.Options

	mu   sync.Mutex
	apps map[string]*app

	shutdown chan struct{}
	once     sync.Once
	stopping atomic.Bool // apps exit because the pod is shutting down
	pidns    *exec.Cmd   // holder of the pod's shared pid namespace, if any
	// pidnsGone is closed when that holder exits (nil without one): the
	// kernel then refuses new members of the namespace.
	pidnsGone chan struct{}
}

// Run serves until Shutdown or SIGTERM, then kills what is left and
// returns.
func Run(opts proto.SuperviseArgs) error {
	if opts.ReadyFD > 0 {
		// Inherited without close-on-exec: keep it out of every process
		// started here, or stage0 would wait for their exit, not ours.
		unix.CloseOnExec(opts.ReadyFD)
	}
	s := &supervisor{
		opts:     opts,
		copt:     container.Options{StateRoot: opts.StateRoot, SystemdCgroup: opts.SystemdCgroup},
		apps:     map[string]*app{},
		shutdown: make(chan struct{}),
	}
	ln, err := s.listen()
	if err != nil {
		s.ready(err)
		return err
	}
	if opts.PidNS != "" {
		if s.pidns, err = startPidnsHolder(opts.RunDir, opts.PidNS); err != nil {
			ln.Close()
			s.ready(err)
			return err
		}
		if err := s.placeHolder(s.pidns.Process.Pid); err != nil {
			s.pidns.Process.Kill()
			s.pidns.Wait()
			unpinPidNS(opts.RunDir, opts.PidNS)
			ln.Close()
			s.ready(err)
			return err
		}
		s.pidnsGone = make(chan struct{})
		go func() {
			s.pidns.Wait()
			close(s.pidnsGone)
			select {
			case <-s.shutdown:
			default:
				slog.Error("the pod's pid namespace holder exited; its apps are gone and no new one can start")
			}
		}()
	}
	if opts.HolderPid > 0 {
		if err := s.placeHolder(opts.HolderPid); err != nil {
			ln.Close()
			s.ready(err)
			return err
		}
	}
	// stage0 may exit or restart at any time; its terminal's hangup and a
	// closed log pipe must not take the pod down.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case sig := <-term:
			slog.Info("shutting down on signal", "signal", sig.String())
			s.stopServing()
		case <-s.shutdown:
		}
	}()
	s.ready(nil)
	go s.serve(ln)
	<-s.shutdown
	ln.Close()
	s.stopping.Store(true)
	s.killAll()
	if s.pidns != nil {
		stopPidnsHolder(s.pidns, s.pidnsGone, opts.RunDir, opts.PidNS)
		if opts.HolderCgroup != "" {
			if err := container.RemoveHolderCgroup(s.copt, opts.HolderCgroup); err != nil {
				slog.Warn("remove the pid namespace holder's cgroup", "cgroup", opts.HolderCgroup, "err", err)
			}
		}
	}
	os.Remove(proto.SocketPath(opts.RunDir))
	os.Remove(proto.PidPath(opts.RunDir))
	return nil
}

// placeHolder moves the pod's pid namespace holder into the pod's
// cgroup, so that it is charged to and killed with the pod, not the
// supervisor.
func (s *supervisor) placeHolder(pid int) error {
	if s.opts.HolderCgroup == "" {
		return nil
	}
	return container.JoinHolderCgroup(s.copt, s.opts.HolderCgroup, pid)
}

func (s *supervisor) listen() (net.Listener, error) {
	if err := os.MkdirAll(s.opts.RunDir, 0o700); err != nil {
		return nil, err
	}
	// The socket is born with the umask's mode: the dir it is born in must
	// already be root's alone (an older stage0 made run dirs 0711).
	if err := fsutil.PrivateDir(s.opts.RunDir, nil); err != nil {
		return nil, err
	}
	sock := proto.SocketPath(s.opts.RunDir)
	os.Remove(sock) // a stale socket of a dead supervisor
	ln, err := unixsock.Listen(sock)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	if err := fsutil.ChmodNoFollow(sock, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(proto.PidPath(s.opts.RunDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (s *supervisor) ready(err error) {
	if s.opts.ReadyFD <= 0 {
		return
	}
	f := os.NewFile(uintptr(s.opts.ReadyFD), "ready")
	msg := "ok\n"
	if err != nil {
		msg = err.Error() + "\n"
	}
	f.WriteString(msg)
	f.Close()
}

func (s *supervisor) stopServing() { s.once.Do(func() { close(s.shutdown) }) }

func (s *supervisor) serve(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-s.shutdown:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			slog.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.handle(conn)
	}
}

func (s *supervisor) handle(conn net.Conn) {
	defer conn.Close() // streaming handlers close it themselves too; twice is harmless
	r := bufio.NewReader(conn)
	req, err := proto.ReadRequest(r) // a line past proto.MaxRequestLine is refused, not read
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			reply(conn, nil, err)
		}
		return
	}
	// Hello answers any version: it is how a peer learns which to speak.
	if req.Method != proto.MethodHello && (req.Version < proto.MinVersion || req.Version > proto.Version) {
		reply(conn, nil, errdefs.FailedPrecondition("stage1 contract version %d requested, this supervisor speaks %d to %d", req.Version, proto.MinVersion, proto.Version))
		return
	}
	switch req.Method {
	case proto.MethodAttach:
		s.attach(conn, r, req)
		return
	case proto.MethodExec:
		s.exec(conn, r, req)
		return
	}
	res, err := s.dispatch(context.Background(), req)
	reply(conn, res, err)
	if req.Method == proto.MethodShutdown && err == nil {
		s.stopServing()
	}
}

func reply(conn net.Conn, res any, err error) {
	var resp proto.Response
	if err != nil {
		resp.Error = proto.ErrorFrom(err)
	} else if res != nil {
		resp.Result, _ = json.Marshal(res)
	}
	data, _ := json.Marshal(resp)
	conn.Write(append(data, '\n'))
}

func decode[T any](req proto.Request) (T, error) {
	var p T
	if len(req.Params) == 0 {
		return p, errdefs.InvalidArgument("%s: missing parameters", req.Method)
	}
	if err := json.Unmarshal(req.Params, &p); err != nil {
		return p, errdefs.InvalidArgument("%s: %w", req.Method, err)
	}
	return p, nil
}

// with decodes req's parameters and calls fn with them.
func with[T any](req proto.Request, fn func(T) (any, error)) (any, error) {
	p, err := decode[T](req)
	if err != nil {
		return nil, err
	}
	return fn(p)
}

func (s *supervisor) dispatch(ctx context.Context, req proto.Request) (any, error) {
	switch req.Method {
	case proto.MethodHello:
		return proto.HelloResult{Version: proto.Version, Pid: os.Getpid(), PodID: s.opts.PodID, Flavor: s.opts.Flavor, Features: proto.Features}, nil
	case proto.MethodAddApp:
		return with(req, s.addApp)
	case proto.MethodStartApp:
		return with(req, func(p proto.NameParams) (any, error) {
			return s.withApp(p.Name, func(a *app) (any, error) { return a.start() })
		})
	case proto.MethodStopApp:
		return with(req, func(p proto.StopAppParams) (any, error) {
			return s.withApp(p.Name, func(a *app) (any, error) { return a.stop(syscall.Signal(p.Signal), p.Timeout) })
		})
	case proto.MethodKillApp:
		return with(req, func(p proto.KillAppParams) (any, error) {
			return s.withApp(p.Name, func(a *app) (any, error) { return nil, a.kill(syscall.Signal(p.Signal)) })
		})
	case proto.MethodRemove:
		return with(req, func(p proto.NameParams) (any, error) { return nil, s.removeApp(p.Name) })
	case proto.MethodState:
		return s.state(), nil
	case proto.MethodReopenLog:
		return with(req, func(p proto.NameParams) (any, error) {
			return s.withApp(p.Name, func(a *app) (any, error) {
				if a.log == nil {
					return nil, errdefs.FailedPrecondition("app %s has no log file", a.name)
				}
				return nil, a.log.Reopen()
			})
		})
	case proto.MethodStats:
		if len(req.Params) == 0 {
			return s.stats(nil), nil
		}
		return with(req, func(p proto.StatsParams) (any, error) { return s.stats(p.Names), nil })
	case proto.MethodUpdateApp:
		return with(req, func(p proto.UpdateAppParams) (any, error) {
			return s.withApp(p.Name, func(a *app) (any, error) { return nil, a.update(p.Resources) })
		})
	case proto.MethodShutdown:
		// Remove every app before answering, so that when stage0 goes on
		// to clean up the pod nothing of the supervisor's is still moving.
		s.stopping.Store(true)
		s.killAll()
		return nil, nil
	}
	return nil, errdefs.InvalidArgument("unknown method %q", req.Method)
}

func (s *supervisor) withApp(name string, fn func(*app) (any, error)) (any, error) {
	s.mu.Lock()
	a := s.apps[name]
	s.mu.Unlock()
	if a == nil { // absent, or still being created
		return nil, errdefs.NotFound("app %q not found in pod %s", name, s.opts.PodID)
	}
	return fn(a)
}

func (s *supervisor) state() proto.StateResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := proto.StateResult{Pid: os.Getpid(), Apps: []proto.AppState{}}
	for _, a := range s.apps {
		if a != nil { // nil: being created
			res.Apps = append(res.Apps, a.snapshot())
		}
	}
	return res
}

// stats reads the cgroup statistics of the named apps (all when none are
// named); apps it does not have, or is still creating, are left out.
func (s *supervisor) stats(names []string) proto.StatsResult {
	s.mu.Lock()
	var apps []*app
	if len(names) == 0 {
		for _, a := range s.apps {
			if a != nil {
				apps = append(apps, a)
			}
		}
	} else {
		for _, n := range names {
			if a := s.apps[n]; a != nil {
				apps = append(apps, a)
			}
		}
	}
	s.mu.Unlock()
	res := proto.StatsResult{Apps: make([]proto.AppStats, 0, len(apps))}
	for _, a := range apps {
		res.Apps = append(res.Apps, a.stats())
	}
	return res
}

func (s *supervisor) addApp(p proto.AddAppParams) (any, error) {
	if p.Name == "" || p.ContainerID == "" || p.Bundle == "" || p.ExitFile == "" {
		return nil, errdefs.InvalidArgument("AddApp: name, containerID, bundle and exitFile are required")
	}
	if s.holderGone() {
		return nil, errdefs.FailedPrecondition("pod %s lost its pid namespace holder: no app can join it", s.opts.PodID)
	}
	s.mu.Lock()
	if _, ok := s.apps[p.Name]; ok {
		s.mu.Unlock()
		return nil, errdefs.AlreadyExists("app %q already exists in pod %s", p.Name, s.opts.PodID)
	}
	s.apps[p.Name] = nil // reserve the name while creating
	s.mu.Unlock()
	a, err := newApp(s.copt, p, s.opts.MaxLogLine)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.apps, p.Name)
		return nil, err
	}
	s.apps[p.Name] = a
	if len(s.opts.ExitCommand) > 0 {
		go s.whenExited(a)
	}
	return a.snapshot(), nil
}

// holderGone says whether the pod's pid namespace holder started by this
// supervisor has exited.
func (s *supervisor) holderGone() bool {
	if s.pidnsGone == nil {
		return false
	}
	select {
	case <-s.pidnsGone:
		return true
	default:
		return false
	}
}

// whenExited runs the exit command once a has exited, if that leaves
// every app of the pod exited and the pod is not shutting down anyway.
func (s *supervisor) whenExited(a *app) {
	<-a.exited
	if s.stopping.Load() {
		return
	}
	s.mu.Lock()
	for _, o := range s.apps {
		if o == nil {
			s.mu.Unlock()
			return // one being added
		}
		select {
		case <-o.exited:
		default:
			s.mu.Unlock()
			return
		}
	}
	s.mu.Unlock()
	cmd := exec.Command(s.opts.ExitCommand[0], s.opts.ExitCommand[1:]...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr // stage1.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		slog.Error("every app has exited; running the exit command", "err", err)
		return
	}
	slog.Info("every app has exited; ran the exit command", "pid", cmd.Process.Pid)
	go cmd.Wait()
}

func (s *supervisor) removeApp(name string) error {
	s.mu.Lock()
	a, ok := s.apps[name]
	s.mu.Unlock()
	if !ok || a == nil {
		return errdefs.NotFound("app %q not found in pod %s", name, s.opts.PodID)
	}
	if err := a.remove(); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.apps, name)
	s.mu.Unlock()
	return nil
}

func (s *supervisor) killAll() {
	s.mu.Lock()
	apps := make([]*app, 0, len(s.apps))
	for _, a := range s.apps {
		if a != nil {
			apps = append(apps, a)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.remove(); err != nil {
				slog.Warn("removing app at shutdown", "app", a.name, "err", err)
			}
		}()
	}
	wg.Wait()
}
