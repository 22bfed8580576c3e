package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/unixsock"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

func TestValidateLogPath(t *testing.T) {
	for _, c := range []struct {
		dir, path, want string
		ok              bool
	}{
		{"/var/log/pods/x", "c/0.log", "/var/log/pods/x/c/0.log", true},
		{"/var/log/pods/x", "", "", true},
		{"/var/log/pods/x", "c/../0.log", "/var/log/pods/x/0.log", true},
		{"/var/log/pods/x", "../y/0.log", "", false},
		{"/var/log/pods/x", "..", "", false},
		{"/var/log/pods/x", ".", "", false},
		{"/var/log/pods/x", "/etc/shadow", "", false},
		{"", "c/0.log", "", false},
	} {
		got, err := validateLogPath(c.dir, c.path)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%q + %q = %q, %v", c.dir, c.path, got, err)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: not InvalidArgument: %v", c.path, err)
		}
	}
}

func TestValidateImageName(t *testing.T) {
	for _, ok := range []string{"busybox", "docker.io/library/busybox:1.36", "127.0.0.1:5000/a/b@sha256:" + strings.Repeat("a", 64),
		"sha256:" + strings.Repeat("b", 64), "abcdef12"} {
		if err := validateImageName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "UPPER/x", "a b", "x:y:z:", "sha256:" + strings.Repeat("g", 64) + "@x"} {
		if err := validateImageName(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: want InvalidArgument, got %v", bad, err)
		}
	}
}

func TestStopSignalNames(t *testing.T) {
	for name, want := range map[string]runtimeapi.Signal{
		"": runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "SIGQUIT": runtimeapi.Signal_SIGNAL_SIGQUIT,
		"quit": runtimeapi.Signal_SIGNAL_SIGQUIT, "9": runtimeapi.Signal_SIGNAL_SIGKILL, "SIGNOPE": runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT,
	} {
		if got := stopSignal(name); got != want {
			t.Errorf("%q: %s, want %s", name, got, want)
		}
	}
}

func TestKernelVersion(t *testing.T) {
	for rel, want := range map[string]bool{"6.18.44-fc": true, "5.12.0": true, "5.11.22-amd64": false, "4.19": false, "5.12-rc1": true, "x": false} {
		if kernelAtLeast(rel, 5, 12) != want {
			t.Errorf("%s", rel)
		}
	}
}

// A socket path longer than sun_path is bound through /proc/self/fd; a
// stale socket is replaced, any other file refused.
func TestListenUnixLongPath(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, strings.Repeat("d", 60), strings.Repeat("e", 60))
	sock := filepath.Join(deep, "runclet.sock")
	if len(sock) <= 107 { // sun_path
		t.Fatalf("path %d bytes is not long enough for the test", len(sock))
	}
	for range 2 { // the second time over the first's stale socket
		ln, err := ListenUnix(sock)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(sock)
		if err != nil || st.Mode().Perm() != 0o600 || st.Mode().Type() != os.ModeSocket {
			t.Fatalf("socket: %v %v", st.Mode(), err)
		}
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		c, err := unixsock.Dial(context.Background(), sock)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2)
		if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
			t.Fatalf("read %q %v", buf, err)
		}
		c.Close()
		ln.Close()
		if _, err := os.Stat(sock); err != nil {
			t.Fatal("closing must not unlink (through the /proc alias)")
		}
	}
	plain := filepath.Join(dir, "file")
	os.WriteFile(plain, nil, 0o644)
	if _, err := ListenUnix(plain); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("a regular file in the way: %v", err)
	}
	if _, err := ListenUnix("relative.sock"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("relative: %v", err)
	}
}

// The watcher reports exit.json and app.json written by rename, pod.json
// in a pod's directory, and a directory that goes away (which it then
// forgets).
func TestWatcher(t *testing.T) {
	got := make(chan appKey, 10)
	w, err := newWatcher(func(k appKey) { got <- k })
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.Mkdir(a, 0o755)
	os.Mkdir(b, 0o755)
	w.add(appKey{"p", "a"}, a)
	w.add(appKey{"p", "b"}, b)
	os.WriteFile(filepath.Join(a, "other"), nil, 0o644) // not news
	os.WriteFile(filepath.Join(b, ".tmp"), []byte("{}"), 0o644)
	os.Rename(filepath.Join(b, ".tmp"), filepath.Join(b, "exit.json"))
	if k := <-got; k.appID != "b" {
		t.Fatalf("got %v", k)
	}
	os.WriteFile(filepath.Join(a, "app.json"), []byte("{}"), 0o644)
	if k := <-got; k.appID != "a" {
		t.Fatalf("got %v", k)
	}
	os.RemoveAll(b)
	if k := <-got; k != (appKey{"p", "b"}) {
		t.Fatalf("got %v after b's directory went", k)
	}
	w.remove("a")
	os.WriteFile(filepath.Join(a, "exit.json"), nil, 0o644)
	w.add(appKey{"p", "c"}, dir) // a later event proves the earlier ones were read
	os.WriteFile(filepath.Join(dir, "exit.json"), nil, 0o644)
	if k := <-got; k.appID != "c" {
		t.Fatalf("got %v after remove", k)
	}
	if n := w.len(); n != 1 {
		t.Fatalf("%d watches, want 1 (b's went with its directory)", n)
	}

	// A pod's directory: pod.json is news, app files are not, and so is
	// the directory's removal.
	pd := filepath.Join(dir, "pod")
	os.Mkdir(pd, 0o755)
	if err := w.addPod("q", pd); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(pd, "exit.json"), nil, 0o644)
	os.WriteFile(filepath.Join(pd, ".tmp"), []byte("{}"), 0o644)
	os.Rename(filepath.Join(pd, ".tmp"), filepath.Join(pd, "pod.json"))
	if k := <-got; k != (appKey{podID: "q"}) {
		t.Fatalf("got %v after pod.json", k)
	}
	os.RemoveAll(pd)
	if k := <-got; k != (appKey{podID: "q"}) {
		t.Fatalf("got %v after the pod's directory went", k)
	}
	if n := w.len(); n != 1 {
		t.Fatalf("%d watches, want 1 (the pod's went with its directory)", n)
	}
}

// fuzzSeeds are valid configs in wire form.
func fuzzSeeds(f *testing.F) {
	for _, m := range []proto.Message{
		sandboxConfig("web"),
		&runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: "busybox"},
			LogPath: "app/0.log", Mounts: []*runtimeapi.Mount{{ContainerPath: "/d", HostPath: "/x", Readonly: true}},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUser: &runtimeapi.Int64Value{Value: 1}, Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/p"},
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}},
		},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// A uid that would add IP= to CNI_ARGS (issue 11).
	inject := sandboxConfig("web")
	inject.Metadata.Uid = "u;IP=10.1.2.3"
	if b, err := proto.Marshal(inject); err == nil {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
}

// FuzzValidateContainerConfig: any bytes that decode as a ContainerConfig
// are validated and, when valid, mapped to an app request without a
// panic; a refusal is always InvalidArgument.
func FuzzValidateContainerConfig(f *testing.F) {
	fuzzSeeds(f)
	p := &pod.Pod{ID: "p", State: pod.PodReady, LogDirectory: "/var/log/pods/x"}
	s := &Server{rt: nopRuntime{}, features: Features{RecursiveReadOnlyMounts: true}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c runtimeapi.ContainerConfig
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		err := validateContainerConfig(&c, p.LogDirectory)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("validation error of another class: %v", err)
			}
			return
		}
		ac, err := s.appConfig(context.Background(), p, &c, nil)
		if err == nil && ac.LogPath != "" && !strings.HasPrefix(ac.LogPath, p.LogDirectory+"/") {
			t.Fatalf("log path %q escapes %s", ac.LogPath, p.LogDirectory)
		}
	})
}

// FuzzValidateSandboxConfig: the same for PodSandboxConfig.
func FuzzValidateSandboxConfig(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c runtimeapi.PodSandboxConfig
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		if err := validateSandboxConfig(&c); err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("validation error of another class: %v", err)
			}
			return
		}
		pc, err := podConfig(&c, "runc")
		if err == nil && (pc.Name == "" || pc.Namespace == "" || pc.UID == "") {
			t.Fatalf("valid config lost its identity: %+v", pc)
		}
		// What goes into CNI_ARGS ("K=V;K=V") cannot carry arguments of its own.
		if err == nil && strings.ContainsAny(pc.Name+pc.Namespace+pc.UID, ";=") {
			t.Fatalf("accepted a pod identity that would inject CNI_ARGS: %q %q %q", pc.Name, pc.Namespace, pc.UID)
		}
		for _, pm := range pc.Ports {
			if pm.HostPort <= 0 {
				t.Fatalf("unpublished port mapped: %+v", pm)
			}
		}
	})
}

// nopRuntime answers the few Runtime calls appConfig makes.
type nopRuntime struct{ Runtime }

func (nopRuntime) HostDevice(h, c, p string) (spec.Device, error) {
	return spec.Device{HostPath: h, ContainerPath: c, Permissions: p}, nil
}

func (nopRuntime) HostDevices() ([]spec.Device, error) { return nil, nil }

// Run serves on a 0600 socket, refuses a second daemon on the same run
// root, and on cancellation stops and removes its socket.
func TestRunDaemon(t *testing.T) {
	dir := t.TempDir()
	opts := DaemonOptions{
		Options: Options{Runtime: newReal(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Socket:  filepath.Join(dir, "sock", "runclet.sock"), RunRoot: filepath.Join(dir, "run"), StopTimeout: time.Second,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := os.Stat(opts.Socket); err == nil {
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("socket mode %v", st.Mode())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no socket")
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+opts.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	v, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "runclet" {
		t.Fatalf("%v %v", v, err)
	}
	second := opts
	second.Socket = filepath.Join(dir, "other.sock")
	if err := Run(context.Background(), second); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a second daemon on the same run root: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}
	if _, err := os.Stat(opts.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket left: %v", err)
	}
}

// The CRI socket is 0600 from the instant it appears at its path, and no
// chmod goes through that path: an attacker who swaps the fresh socket
// for a symlink (a writable socket directory) must not get another file
// chmod-ed, and a symlink planted before start is refused, not followed.
func TestListenUnixNoWindowNoSymlinkChmod(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o1777) // as a shared directory would be
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "runclet.sock")
	if err := os.Symlink(victim, sock); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(sock); err == nil {
		t.Fatal("listened over a planted symlink")
	}
	os.Remove(sock)

	for i := range 300 {
		stop := make(chan struct{})
		seen := make(chan os.FileMode, 1)
		done := make(chan struct{})
		go func() { // the attacker: swap the socket for a symlink as soon as it shows
			defer close(done)
			defer close(seen)
			link := filepath.Join(dir, fmt.Sprintf("link%d", i))
			os.Symlink(victim, link)
			for {
				select {
				case <-stop:
					os.Remove(link)
					return
				default:
				}
				if st, err := os.Lstat(sock); err == nil && st.Mode().Type() == os.ModeSocket {
					seen <- st.Mode().Perm()
					os.Rename(link, sock)
					return
				}
			}
		}()
		ln, err := ListenUnix(sock)
		close(stop)
		mode, ok := <-seen
		<-done // its rename is over: nothing moves in dir from here on
		if ok && mode != 0o600 {
			t.Fatalf("socket seen with mode %v", mode)
		}
		if err == nil {
			ln.Close()
		}
		os.Remove(sock)
		if st, _ := os.Stat(victim); st.Mode().Perm() != 0o644 {
			t.Fatalf("iteration %d: the symlink's target was chmod-ed to %v", i, st.Mode().Perm())
		}
	}
}
