package pod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/spec"
)

// A pod and its apps go through the manager's whole life on this host;
// nothing is left once the pod is removed.
func TestPodLifecycle(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	cfg := podConfig("life")
	cfg.SharePID = true
	p := r.readyPod2(cfg)
	if p.State != PodReady || p.Attachment == nil || len(p.Attachment.PodIPs()) == 0 {
		t.Fatalf("pod: %+v", p)
	}
	if got, err := r.m.FindPod("life"); err != nil || got.ID != p.ID {
		t.Fatalf("FindPod by name: %v %v", got, err)
	}
	if got, err := r.m.FindPod(p.ID[:8]); err != nil || got.ID != p.ID {
		t.Fatalf("FindPod by prefix: %v %v", got, err)
	}
	if _, err := r.m.FindPod("no-such-pod"); !errdefs.IsNotFound(err) {
		t.Fatalf("FindPod of nothing: %v", err)
	}
	if sup, holder := r.m.PodPids(p.ID); sup <= 0 || holder <= 0 {
		t.Fatalf("PodPids: %d %d", sup, holder)
	}
	img := r.busybox()
	a, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "web", Image: img, StopSignal: "SIGUSR1",
		Spec: spec.App{Command: []string{"sh", "-c", "trap 'exit 0' USR1; echo started; while :; do sleep 0.2; echo tick; done"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "web", Image: img}); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second app of one name and attempt: %v", err)
	}
	if _, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "x", Image: img, ID: "NOT-HEX"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("app id that is not hex: %v", err)
	}
	if _, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "x", Image: img, ID: a.ID}); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("app id that is taken: %v", err)
	}
	if _, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "x", Image: img, StopSignal: "SIGNOPE"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("unknown stop signal: %v", err)
	}
	if a, err = r.m.StartApp(ctx, p.ID, "web"); err != nil || a.State != AppRunning || a.Pid <= 0 {
		t.Fatalf("start: %+v %v", a, err)
	}
	if _, err := r.m.StartApp(ctx, p.ID, "web"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second start: %v", err)
	}
	if _, err := r.m.StartApp(ctx, p.ID, a.ID[:6]); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("start by id prefix finds the app: %v", err)
	}
	if _, err := r.m.StartApp(ctx, p.ID, "nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("start of nothing: %v", err)
	}
	got, apps, err := r.m.PodStatus(ctx, p.ID)
	if err != nil || got.Broken != "" || len(apps) != 1 || apps[0].State != AppRunning {
		t.Fatalf("status: %+v %+v %v", got, apps, err)
	}
	if err := r.m.ReopenLog(ctx, p.ID, "web"); err != nil {
		t.Fatalf("reopen log: %v", err)
	}
	if st, err := r.m.AppStats(ctx, p.ID, []string{a.ID}); err != nil || len(st) != 1 {
		t.Fatalf("app stats: %+v %v", st, err)
	}
	if _, err := r.m.PodStats(ctx, got); err != nil {
		t.Fatalf("pod stats: %v", err)
	}
	var out, errOut bytes.Buffer
	code, err := r.m.Exec(ctx, p.ID, "web", ExecConfig{Cmd: []string{"sh", "-c", "read x; echo out $x $E; echo err >&2; exit 7"}, Env: []string{"E=env"}},
		Streams{Stdin: strings.NewReader("in\n"), Stdout: &out, Stderr: &errOut})
	if err != nil || code != 7 || out.String() != "out in env\n" || errOut.String() != "err\n" {
		t.Fatalf("exec: %d %v %q %q", code, err, out.String(), errOut.String())
	}
	out.Reset()
	if code, err := r.m.Exec(ctx, p.ID, "web", ExecConfig{Cmd: []string{"tty"}}, Streams{Stdout: &out, Tty: true}); err != nil || code != 0 || !strings.Contains(out.String(), "/dev/pts/") {
		t.Fatalf("exec with a tty: %d %v %q", code, err, out.String())
	}
	if code, err := r.m.Exec(ctx, p.ID, "web", ExecConfig{Cmd: []string{"sleep", "60"}, Timeout: 300 * time.Millisecond}, Streams{}); !errors.Is(err, ErrTimeout) || code != 137 {
		t.Fatalf("exec past its timeout: %d %v", code, err)
	}
	if _, err := r.m.Exec(ctx, p.ID, "web", ExecConfig{}, Streams{}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("exec of nothing: %v", err)
	}
	// An attach sees what the app writes after it attached, until it goes.
	actx, acancel := context.WithCancel(ctx)
	attached := make(chan struct{})
	var aout syncBuffer
	adone := make(chan error, 1)
	go func() {
		_, err := r.m.Attach(actx, p.ID, "web", Streams{Stdout: &aout, Stderr: &aout, Attached: func() { close(attached) }})
		adone <- err
	}()
	<-attached
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(aout.String(), "tick"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("attach got %q", aout.String())
		}
	}
	acancel()
	if err := <-adone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("attach end: %v", err)
	}
	if a, err = r.m.UpdateApp(ctx, p.ID, "web", spec.Resources{CPUShares: 512, MemoryLimit: 256 << 20}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if s, err := spec.ReadBundle(r.l.Bundle(p.ID, a.ID)); err != nil || s.Linux.Resources.Memory == nil || *s.Linux.Resources.Memory.Limit != 256<<20 {
		t.Fatalf("bundle after update: %v", err)
	}
	if err := r.m.KillApp(ctx, p.ID, a.ID, syscall.SIGCONT); err != nil {
		t.Fatalf("kill with a harmless signal: %v", err)
	}
	// Once it says so, it traps its stop signal, USR1: it exits 0 well
	// before the timeout.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(a.LogPath); strings.Contains(string(b), "stdout F started") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("log: %q", b)
		}
	}
	start := time.Now()
	if a, err = r.m.StopApp(ctx, p.ID, "web", 20*time.Second); err != nil || a.State != AppExited || a.ExitCode != 0 {
		t.Fatalf("stop: %+v %v", a, err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("stop took %v: the stop signal was not used", time.Since(start))
	}
	if err := r.m.RemoveApp(ctx, p.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.l.AppDir(p.ID, a.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("app dir after RemoveApp: %v", err)
	}
	// One left running is killed by StopPod.
	b, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "sleeper", Image: img, Spec: spec.App{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.StartApp(ctx, p.ID, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.m.StopPod(ctx, p.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.m.StopPod(ctx, p.ID, time.Second); err != nil {
		t.Fatalf("second StopPod: %v", err)
	}
	if _, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "late", Image: img}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("AddApp to a stopped pod: %v", err)
	}
	_, apps, _ = r.m.PodStatus(ctx, p.ID)
	if len(apps) != 1 || apps[0].State != AppExited {
		t.Fatalf("apps of a stopped pod: %+v", apps)
	}
	res, err := r.m.GC(ctx, GCOptions{IncludeCRI: true}) // the rig's pods have a namespace: CRI pods
	if err != nil || len(res.Pods) != 1 || res.Pods[0] != p.ID {
		t.Fatalf("GC of the stopped pod: %+v %v", res, err)
	}
	if err := r.m.RemovePod(ctx, p.ID); !errdefs.IsNotFound(err) && err != nil {
		t.Fatalf("RemovePod of a removed pod: %v", err)
	}
	r.noLeaks("a pod's whole life")
}

// A pod whose supervisor was killed is broken: its running app is
// unknown, and GC removes it and everything it had.
func TestGCRemovesAPodWhoseSupervisorDied(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	p := r.readyPod("crashed")
	a, err := r.m.AddApp(ctx, p.ID, AppConfig{Name: "sleeper", Image: r.busybox(), Spec: spec.App{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.StartApp(ctx, p.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	killSupervisor(t, r.l, p.ID)
	got, _, err := r.m.PodStatus(ctx, p.ID)
	if err != nil || got.Broken == "" {
		t.Fatalf("status of a pod without its supervisor: %+v %v", got, err)
	}
	if res, err := r.m.GCPreparing(ctx); err != nil || len(res.Pods) != 0 {
		t.Fatalf("GCPreparing removed a ready pod: %+v %v", res, err)
	}
	res, err := r.m.GC(ctx, GCOptions{IncludeCRI: true}) // the rig's pods have a namespace: CRI pods
	if err != nil || len(res.Pods) != 1 {
		t.Fatalf("GC: %+v %v", res, err)
	}
	r.noLeaks("GC of a pod whose supervisor died")
}

// A pod the daemon crashed while creating (a record in state preparing)
// and an app directory without a record are removed by GCPreparing.
func TestGCPreparingRemovesHalfMadePodsAndApps(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	p := r.readyPod("keeps")
	half := &Pod{ID: newID(), Name: "half", State: PodPreparing, CreatedAt: time.Now()}
	if err := r.m.makePodDirs(half); err != nil {
		t.Fatal(err)
	}
	if err := r.l.savePod(half); err != nil {
		t.Fatal(err)
	}
	stray := r.l.AppDir(p.ID, newID())
	if err := os.MkdirAll(filepath.Join(stray, "bundle", "rootfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	res, err := r.m.GCPreparing(ctx)
	if err != nil || len(res.Pods) != 1 || res.Pods[0] != half.ID {
		t.Fatalf("GCPreparing: %+v %v", res, err)
	}
	if len(res.Apps) != 1 {
		t.Errorf("half-made apps removed: %v", res.Apps)
	}
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stray app dir: %v", err)
	}
	if !r.m.SupervisorAlive(ctx, p.ID) {
		t.Fatal("GCPreparing touched a ready pod")
	}
	if err := r.m.RemovePod(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	r.noLeaks("GCPreparing")
}

// readyPod2 is readyPod with a whole config.
func (r *rig) readyPod2(cfg PodConfig) *Pod {
	r.t.Helper()
	p, err := r.m.CreatePod(context.Background(), cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func TestCreatePodRefusesBadConfigs(t *testing.T) {
	l := Layout{Root: t.TempDir(), RunRoot: t.TempDir()}
	m := &Manager{opts: Options{DefaultFlavor: FlavorRunc}, l: l}
	idmap := &UserNSConfig{UIDMap: []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}, GIDMap: []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}}
	for what, cfg := range map[string]PodConfig{
		"unknown flavor":          {Name: "a", Flavor: "kvm2"},
		"bad name":                {Name: "Not_A_Name!"},
		"bad hostname":            {Name: "a", Hostname: "under_score"},
		"long hostname":           {Name: "a", Hostname: strings.Repeat("h", 65)},
		"user namespace with fly": {Name: "a", Flavor: FlavorFly, UserNS: idmap},
		"user namespace host net": {Name: "a", HostNetwork: true, UserNS: idmap},
		"two uid mappings":        {Name: "a", UserNS: &UserNSConfig{UIDMap: append(idmap.UIDMap, idmap.UIDMap...), GIDMap: idmap.GIDMap}},
		"mapping not from 0":      {Name: "a", UserNS: &UserNSConfig{UIDMap: []specs.LinuxIDMapping{{ContainerID: 1, HostID: 1, Size: 1}}, GIDMap: idmap.GIDMap}},
		"empty gid mapping":       {Name: "a", UserNS: &UserNSConfig{UIDMap: idmap.UIDMap, GIDMap: []specs.LinuxIDMapping{{HostID: 1}}}},
		"overflowing gid mapping": {Name: "a", UserNS: &UserNSConfig{UIDMap: idmap.UIDMap, GIDMap: []specs.LinuxIDMapping{{HostID: 1<<32 - 2, Size: 10}}}},
	} {
		if _, err := m.CreatePod(context.Background(), cfg); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", what, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(l.Root, "pods")); len(ents) != 0 {
		t.Fatalf("refused configs left pods: %v", ents)
	}
}

func TestUndoRunsInReverseAndGoesOnAfterFailures(t *testing.T) {
	var order []int
	var u undo
	for i := 0; i < 3; i++ {
		u.add(func() error {
			order = append(order, i)
			if i == 1 {
				return errors.New("step 1 fails")
			}
			return nil
		})
	}
	u.run("test")
	if len(order) != 3 || order[0] != 2 || order[1] != 1 || order[2] != 0 {
		t.Fatalf("order %v", order)
	}
}

// A host port taken by another pod of this runclet or by a host process
// is refused; stopped pods and other protocols or addresses do not count.
func TestCheckPorts(t *testing.T) {
	l := Layout{Root: t.TempDir(), RunRoot: t.TempDir()}
	m := &Manager{l: l}
	// Ports no host process holds now, for every protocol they are asked with.
	tcpPort, udpPort, stoppedPort := freePort(t, "udp"), freePort(t, "udp"), freePort(t, "tcp")
	for _, p := range []*Pod{
		{ID: newID(), State: PodReady, Ports: []network.PortMapping{{HostPort: tcpPort, ContainerPort: 80}, {HostPort: udpPort, Protocol: "UDP", HostIP: "127.0.0.1"}}},
		{ID: newID(), State: PodStopped, Ports: []network.PortMapping{{HostPort: stoppedPort, ContainerPort: 80}}},
	} {
		if err := os.MkdirAll(l.PodDir(p.ID), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := l.savePod(p); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := int32(ln.Addr().(*net.TCPAddr).Port)
	for _, c := range []struct {
		want network.PortMapping
		ok   bool
	}{
		{network.PortMapping{HostPort: tcpPort}, false},                                      // tcp by default on both sides
		{network.PortMapping{HostPort: tcpPort, Protocol: "udp"}, true},                      // other protocol
		{network.PortMapping{HostPort: udpPort, Protocol: "udp"}, false},                     // any address overlaps 127.0.0.1
		{network.PortMapping{HostPort: udpPort, Protocol: "udp", HostIP: "127.0.0.2"}, true}, // another address
		{network.PortMapping{HostPort: stoppedPort}, true},                                   // its pod is stopped
		{network.PortMapping{HostPort: busy, HostIP: "127.0.0.1"}, false},                    // a host process listens
		{network.PortMapping{HostPort: busy, Protocol: "sctp"}, true},                        // not probed
	} {
		err := m.checkPorts([]network.PortMapping{c.want})
		if (err == nil) != c.ok || (err != nil && !errdefs.IsAlreadyExists(err)) {
			t.Errorf("%+v: %v", c.want, err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// freePort returns a port that is free on this host for tcp and for udp.
func freePort(t *testing.T, proto string) int32 {
	t.Helper()
	for i := 0; i < 100; i++ {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if proto == "udp" {
			c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			if err != nil {
				continue
			}
			c.Close()
		}
		return int32(port)
	}
	t.Fatal("no free port")
	return 0
}
