// Package proto is the stage1 contract's control protocol: the messages
// stage0 and the pod supervisor exchange over the supervisor's unix
// socket, and the client stage0 uses. It is the only code both sides
// share, it imports nothing heavy, and docs/stage1-contract.md is its
// specification; change both together and bump Version when a method or
// feature is added (an older peer must be able to tell from Hello).
//
// Each call is one connection: the client writes one JSON Request and a
// newline, the supervisor answers one JSON Response and a newline. For
// streaming methods (attach, exec) the connection then carries tty/stream
// frames until either side closes it.
package proto

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/state"
	"github.com/runclet/runclet/internal/unixsock"
)

// Version is the contract version this build speaks; it also answers
// requests of every version down to MinVersion (each version only adds).
const (
	Version    = 2
	MinVersion = 1
)

// Features a supervisor may support, named by Hello. A supervisor of
// version 1 names none: stage0 does not call it for any of them.
const (
	FeatureStats     = "stats"      // MethodStats (version 2)
	FeatureUpdateApp = "update-app" // MethodUpdateApp (version 2)
)

// Features are what this build's supervisor supports.
var Features = []string{FeatureStats, FeatureUpdateApp}

// added are the methods that came after version 1: the version a request
// for one carries and the feature Hello names for it.
var added = map[string]struct {
	version int
	feature string
}{
	MethodStats:     {2, FeatureStats},
	MethodUpdateApp: {2, FeatureUpdateApp},
}

// RequestVersion is the version a request for method carries: the lowest
// one that defines it, so that a supervisor of that version reads it.
func RequestVersion(method string) int {
	if a, ok := added[method]; ok {
		return a.version
	}
	return MinVersion
}

// FeatureOf is the feature a supervisor must name in Hello before it is
// called with method ("" for the methods of version 1).
func FeatureOf(method string) string { return added[method].feature }

// Methods.
const (
	MethodHello    = "Hello"
	MethodAddApp   = "AddApp"
	MethodStartApp = "StartApp"
	MethodStopApp  = "StopApp"
	MethodKillApp  = "KillApp"
	MethodRemove   = "RemoveApp"
	MethodState    = "State"
	MethodShutdown = "Shutdown"
	// Streaming: after the response the connection carries tty/stream frames.
	MethodAttach = "Attach"
	MethodExec   = "Exec"
	// MethodReopenLog reopens an app's log file at its path (kubelet rotation).
	MethodReopenLog = "ReopenLog"
	// MethodStats reads apps' cgroup statistics (version 2, FeatureStats).
	MethodStats = "Stats"
	// MethodUpdateApp changes a created or running app's cgroup resources
	// (version 2, FeatureUpdateApp).
	MethodUpdateApp = "UpdateApp"
)

// Request is what the client sends.
type Request struct {
	Version int             `json:"version"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// Response is what the supervisor answers.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Error carries an error class across the socket so stage0 can map it
// (to a CLI message or a gRPC code) as if it had happened locally.
type Error struct {
	Class   string `json:"class"` // see classes; anything else is internal
	Message string `json:"message"`
}

// HelloResult identifies the supervisor and says what it supports.
type HelloResult struct {
	Version  int      `json:"version"`
	Pid      int      `json:"pid"`
	PodID    string   `json:"podID"`
	Flavor   string   `json:"flavor"`
	Features []string `json:"features,omitempty"` // absent from version 1
}

// Supports says whether the supervisor named feature f.
func (h HelloResult) Supports(f string) bool { return slices.Contains(h.Features, f) }

// AddAppParams creates an app from a bundle stage0 wrote. The app's
// process is created and waits, like `runc create`, until StartApp.
type AddAppParams struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"` // libcontainer ID, unique in the state root
	Bundle      string `json:"bundle"`      // directory holding config.json; rootfs is already mounted
	LogPath     string `json:"logPath"`     // CRI log file the supervisor writes
	ExitFile    string `json:"exitFile"`    // where the supervisor records the exit (ExitStatus JSON)
	Stdin       bool   `json:"stdin"`       // keep a stdin pipe open for attach
	StdinOnce   bool   `json:"stdinOnce"`   // close stdin when the first attach detaches
	Terminal    bool   `json:"terminal"`    // allocate a pty (process.terminal in config.json)
}

// NameParams names one app.
type NameParams struct {
	Name string `json:"name"`
}

// StopAppParams stops an app: Signal, then SIGKILL after Timeout.
type StopAppParams struct {
	Name    string        `json:"name"`
	Signal  int           `json:"signal"` // 0 means SIGTERM
	Timeout time.Duration `json:"timeout"`
}

// KillAppParams sends one signal.
type KillAppParams struct {
	Name   string `json:"name"`
	Signal int    `json:"signal"`
}

// AttachParams attaches to an app's stdio. Output frames carry only what
// the app writes after the attach; earlier output is in its log.
type AttachParams struct {
	Name   string `json:"name"`
	Stdin  bool   `json:"stdin"`
	Stdout bool   `json:"stdout"`
	Stderr bool   `json:"stderr"`
}

// AttachResult says how to treat the stream.
type AttachResult struct {
	Tty bool `json:"tty"`
}

// ExecParams runs a process in a running app with the app's namespaces,
// cgroup, user, capabilities and seccomp.
type ExecParams struct {
	Name    string        `json:"name"`
	Args    []string      `json:"args"`
	Env     []string      `json:"env,omitempty"`
	Cwd     string        `json:"cwd,omitempty"`
	Tty     bool          `json:"tty"`
	Stdin   bool          `json:"stdin"`
	Width   uint16        `json:"width,omitempty"`
	Height  uint16        `json:"height,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"` // 0: none; on expiry the process and its group are killed
}

// ExecResult identifies the exec'd process; its exit comes as the Exit
// frame (exit code 137 and error "timeout" when Timeout killed it).
type ExecResult struct {
	Pid int `json:"pid"`
}

// StatsParams selects apps; no names (or no params) means every app.
type StatsParams struct {
	Names []string `json:"names,omitempty"`
}

// StatsResult holds one entry per selected app the supervisor has (names
// it does not have are left out).
type StatsResult struct {
	Apps []AppStats `json:"apps"`
}

// AppStats are one app's cgroup statistics at Timestamp, read through
// libcontainer (cgroup v1 and v2 alike). Counters are cumulative; stage0
// computes rates. Zero means "not available" for limits.
type AppStats struct {
	Name      string    `json:"name"`
	Timestamp time.Time `json:"timestamp"`
	// Error is set when the app's cgroup could not be read (the other
	// fields are then zero).
	Error string `json:"error,omitempty"`
	// CPUUsageNanos is the CPU time the app's cgroup used, cumulative.
	CPUUsageNanos uint64 `json:"cpuUsageNanos"`
	// MemoryUsage is the cgroup's memory usage (v1 memory.usage_in_bytes,
	// v2 memory.current).
	MemoryUsage uint64 `json:"memoryUsage"`
	// MemoryWorkingSet is usage minus inactive file pages, as kubelet
	// computes it (never below zero).
	MemoryWorkingSet uint64 `json:"memoryWorkingSet"`
	// MemoryRSS is anonymous memory (v1 total_rss, v2 anon).
	MemoryRSS uint64 `json:"memoryRSS"`
	// MemoryLimit is the memory limit; 0 when unlimited.
	MemoryLimit     uint64 `json:"memoryLimit,omitempty"`
	PageFaults      uint64 `json:"pageFaults"`
	MajorPageFaults uint64 `json:"majorPageFaults"`
	// SwapUsage is swap alone (not memory+swap); SwapLimit is 0 when
	// unlimited or unknown.
	SwapUsage uint64 `json:"swapUsage,omitempty"`
	SwapLimit uint64 `json:"swapLimit,omitempty"`
	// Pids is the number of tasks in the cgroup (pids.current).
	Pids uint64 `json:"pids"`

	// The fields below came with version 2; a
	// supervisor that predates them leaves them out (nil or empty), which
	// stage0 must tell apart from zero.

	// CPU is CPU time by mode and CFS bandwidth throttling.
	CPU *AppCPUStats `json:"cpu,omitempty"`
	// Memory is the rest of the memory controller's numbers.
	Memory *AppMemoryStats `json:"memory,omitempty"`
	// Process counts the app's processes, threads and open files; nil
	// when the cgroup's process list could not be read.
	Process *AppProcessStats `json:"process,omitempty"`
	// Blkio is the block I/O the cgroup did, one entry per device it did
	// I/O on.
	Blkio []BlkioDevice `json:"blkio,omitempty"`
	// Hugetlb is hugepage usage, one entry per page size.
	Hugetlb []HugetlbUsage `json:"hugetlb,omitempty"`
	// Pressure is pressure stall information (cgroup v2 only: nil on v1).
	Pressure *PressureStats `json:"pressure,omitempty"`
}

// AppCPUStats are cumulative CPU counters of an app's cgroup.
type AppCPUStats struct {
	UserNanos   uint64 `json:"userNanos"`
	SystemNanos uint64 `json:"systemNanos"`
	// CFS bandwidth control: enforcement periods elapsed, periods in
	// which the cgroup was throttled, and the time it was throttled.
	Periods          uint64 `json:"periods"`
	ThrottledPeriods uint64 `json:"throttledPeriods"`
	ThrottledNanos   uint64 `json:"throttledNanos"`
}

// AppMemoryStats are memory numbers beyond the basic ones in AppStats.
type AppMemoryStats struct {
	// Cache is page cache (v1 total_cache, v2 file); MappedFile is
	// mapped file memory (v1 total_mapped_file, v2 file_mapped).
	Cache      uint64 `json:"cache"`
	MappedFile uint64 `json:"mappedFile"`
	// Kernel is kernel memory (v1 memory.kmem.usage_in_bytes, v2
	// memory.stat kernel).
	Kernel uint64 `json:"kernel"`
	// MaxUsage is the peak usage (v1 memory.max_usage_in_bytes, v2
	// memory.peak; 0 where the kernel has no peak).
	MaxUsage uint64 `json:"maxUsage"`
	// Failcnt counts the times usage hit the limit (v1 memory.failcnt,
	// v2 memory.events max).
	Failcnt uint64 `json:"failcnt"`
	// OOMKills counts processes the OOM killer killed in the cgroup (v1
	// memory.oom_control oom_kill, v2 memory.events oom_kill).
	OOMKills uint64 `json:"oomKills"`
}

// AppProcessStats count what runs in an app's cgroup.
type AppProcessStats struct {
	// Processes are the cgroup's processes (cgroup.procs), Threads its
	// tasks (pids.current; without a pids controller the sum of the
	// processes' Threads: lines in /proc/<pid>/status).
	Processes uint64 `json:"processes"`
	Threads   uint64 `json:"threads"`
	// ThreadsMax is pids.max, 0 when unlimited.
	ThreadsMax uint64 `json:"threadsMax,omitempty"`
	// FileDescriptors are the processes' open descriptors (entries of
	// /proc/<pid>/fd), Sockets those that are sockets.
	FileDescriptors uint64 `json:"fileDescriptors"`
	Sockets         uint64 `json:"sockets"`
	// OpenFilesSoftLimit is the soft RLIMIT_NOFILE of the app's init
	// (/proc/<pid>/limits), 0 when unknown.
	OpenFilesSoftLimit uint64 `json:"openFilesSoftLimit,omitempty"`
}

// BlkioDevice is the cgroup's I/O on one block device: bytes and
// operations by operation name as the kernel counts them ("Read" and
// "Write"; v1 also "Sync", "Async", "Discard" and "Total").
type BlkioDevice struct {
	Major uint64            `json:"major"`
	Minor uint64            `json:"minor"`
	Bytes map[string]uint64 `json:"bytes,omitempty"`
	Ops   map[string]uint64 `json:"ops,omitempty"`
}

// HugetlbUsage is hugepage memory of one page size ("2MB", "1GB").
type HugetlbUsage struct {
	PageSize string `json:"pageSize"`
	Usage    uint64 `json:"usage"`
	MaxUsage uint64 `json:"maxUsage,omitempty"` // v1 only
}

// PressureStats are cumulative stall times from the cgroup's
// cpu.pressure, memory.pressure and io.pressure; nil where absent.
type PressureStats struct {
	CPU    *PressureTotals `json:"cpu,omitempty"`
	Memory *PressureTotals `json:"memory,omitempty"`
	IO     *PressureTotals `json:"io,omitempty"`
}

// PressureTotals are the "total=" fields, in microseconds: Some is time
// at least one task waited, Full time all non-idle tasks were stalled.
type PressureTotals struct {
	SomeMicros uint64 `json:"someMicros"`
	FullMicros uint64 `json:"fullMicros"`
}

// UpdateAppParams changes an app's cgroup resources. Fields of Resources
// that are nil (or, for strings, empty) stay as they are, as with
// `runc update`; Devices are ignored. stage0 writes the same resources
// into the bundle's config.json once the call succeeded.
type UpdateAppParams struct {
	Name      string                `json:"name"`
	Resources *specs.LinuxResources `json:"resources"`
}

// AppState is one app as the supervisor sees it.
type AppState struct {
	Name        string      `json:"name"`
	ContainerID string      `json:"containerID"`
	Status      state.App   `json:"status"` // created, running or exited
	Pid         int         `json:"pid,omitempty"`
	CreatedAt   time.Time   `json:"createdAt"`
	StartedAt   time.Time   `json:"startedAt,omitzero"`
	Exit        *ExitStatus `json:"exit,omitempty"`
	// LogWriteErrors counts log records lost to write errors (disk full).
	LogWriteErrors uint64 `json:"logWriteErrors,omitempty"`
}

// ExitStatus is written to an app's exit file the moment it exits.
type ExitStatus struct {
	ExitCode  int       `json:"exitCode"`
	Signal    int       `json:"signal,omitempty"` // set when killed by a signal; ExitCode is then 128+Signal
	OOMKilled bool      `json:"oomKilled,omitempty"`
	ExitedAt  time.Time `json:"exitedAt"`
	// StartedAt is when the app was started (zero if it never was), so an
	// exit that is the first news of a start still tells of the start.
	StartedAt time.Time `json:"startedAt,omitzero"`
	Reason    string    `json:"reason"` // Completed, Error, OOMKilled
	Message   string    `json:"message,omitempty"`
}

// StateResult lists the apps.
type StateResult struct {
	Pid  int        `json:"pid"`
	Apps []AppState `json:"apps"`
}

var classes = []struct {
	name string
	err  error
}{
	{"not_found", errdefs.ErrNotFound},
	{"already_exists", errdefs.ErrAlreadyExists},
	{"invalid_argument", errdefs.ErrInvalidArgument},
	{"failed_precondition", errdefs.ErrFailedPrecondition},
	{"unavailable", errdefs.ErrUnavailable},
	{"deadline_exceeded", errdefs.ErrDeadlineExceeded},
}

// ErrorFrom turns a Go error into its wire form.
func ErrorFrom(err error) *Error {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return &Error{Class: c.name, Message: err.Error()}
		}
	}
	return &Error{Class: "internal", Message: err.Error()}
}

// Err turns the wire form back into an error of the same class.
func (e *Error) Err() error {
	for _, c := range classes {
		if e.Class == c.name {
			return &remoteError{class: c.err, msg: e.Message}
		}
	}
	return errors.New(e.Message)
}

type remoteError struct {
	class error
	msg   string
}

func (r *remoteError) Error() string { return r.msg }
func (r *remoteError) Unwrap() error { return r.class }

// Dial opens a connection to a supervisor and sends one request; the
// caller reads the response with ReadResponse (and then, for streaming
// methods, uses the connection).
func Dial(ctx context.Context, socket, method string, params any) (net.Conn, *bufio.Reader, error) {
	conn, err := unixsock.Dial(ctx, socket)
	if err != nil {
		return nil, nil, errdefs.Unavailable("pod supervisor at %s: %w", socket, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req := Request{Version: RequestVersion(method), Method: method}
	if params != nil {
		if req.Params, err = json.Marshal(params); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	data, _ := json.Marshal(req)
	if _, err := conn.Write(append(data, '\n')); err != nil {
		conn.Close()
		return nil, nil, errdefs.Unavailable("pod supervisor at %s: %w", socket, err)
	}
	return conn, bufio.NewReader(conn), nil
}

// ReadResponse reads one response line into result (which may be nil).
func ReadResponse(r *bufio.Reader, result any) error {
	line, err := ReadLine(r, MaxResponseLine)
	if errdefs.IsInvalidArgument(err) {
		return fmt.Errorf("pod supervisor answered a line longer than %d bytes", MaxResponseLine)
	}
	if err != nil {
		return errdefs.Unavailable("pod supervisor closed the connection: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("pod supervisor answered garbage: %w", err)
	}
	if resp.Error != nil {
		return resp.Error.Err()
	}
	if result != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, result)
	}
	return nil
}

// Call makes one request/response call.
func Call(ctx context.Context, socket, method string, params, result any) error {
	conn, r, err := Dial(ctx, socket, method, params)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := ReadResponse(r, result); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", method, ctx.Err())
		}
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

// MaxRequestLine bounds one request line (newline included): the largest
// legitimate one, an Exec of a long command line and environment, stays
// far below it. A longer line is refused without being read into memory.
const MaxRequestLine = 4 << 20

// MaxResponseLine bounds one response line (a StateResult or StatsResult
// of a pod with many apps is the largest).
const MaxResponseLine = 64 << 20

// ReadLine reads one '\n'-terminated line of at most max bytes, newline
// included; a longer one is an InvalidArgument error after reading no
// more than max bytes of it.
func ReadLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, errdefs.InvalidArgument("line longer than %d bytes", max)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

// ReadRequest reads and decodes one request line, as the supervisor
// does for every connection. A read error is returned as is; a line too
// long or not a request is InvalidArgument.
func ReadRequest(r *bufio.Reader) (Request, error) {
	var req Request
	line, err := ReadLine(r, MaxRequestLine)
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			return req, fmt.Errorf("bad request: %w", err)
		}
		return req, err
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, errdefs.InvalidArgument("bad request: %w", err)
	}
	return req, nil
}
