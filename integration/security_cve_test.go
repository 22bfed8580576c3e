package integration

// Attacks on the container runtime, performed for real: the RuntimeDefault
// seccomp profile, and the runc CVE classes (hostile images and hostile
// container processes). Each test fails if the attack succeeds.

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testimage"
)

// secProbeSource is /usr/local/bin/secprobe: each argument is a probe, and
// it prints one "name: result" line per probe, the result being "ok" or the
// errno's number.
const secProbeSource = `package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// errnoOf prints ok or the errno number.
func errnoOf(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := err.(syscall.Errno); ok {
		return strconv.Itoa(int(e))
	}
	return err.Error()
}

func main() {
	for _, p := range os.Args[1:] {
		var res string
		switch {
		case p == "io_uring_setup":
			// struct io_uring_params is 120 bytes; 425 is io_uring_setup
			// on every architecture.
			var params [120]byte
			fd, _, e := syscall.Syscall(425, 4, uintptr(unsafe.Pointer(&params[0])), 0)
			if e != 0 {
				res = errnoOf(e)
			} else {
				syscall.Close(int(fd))
				res = "ok"
			}
		case len(p) > 7 && p[:7] == "socket=":
			family, _ := strconv.Atoi(p[7:])
			typ := syscall.SOCK_STREAM
			if family == 38 { // AF_ALG
				typ = syscall.SOCK_SEQPACKET
			}
			fd, err := syscall.Socket(family, typ, 0)
			if err == nil {
				syscall.Close(fd)
			}
			res = errnoOf(err)
		default:
			res = "unknown probe"
		}
		fmt.Printf("%s: %s\n", p, res)
	}
}
`

// probeResults parses secprobe's output.
func probeResults(out string) map[string]string {
	res := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			res[k] = v
		}
	}
	return res
}

// secProbeImage is busybox with secprobe.
func secProbeImage(t *testing.T) v1.Image {
	t.Helper()
	l, err := testimage.GoProgram("secprobe", secProbeSource)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(testimage.MustBusybox(t), l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// tarEntry is one entry of a hostile layer.
type tarEntry struct {
	name, linkname string
	typ            byte
	mode           int64
	data           string
}

// withEntries returns base with a layer holding entries, written as given
// (hostile names and link targets included: that is the point).
func withEntries(t *testing.T, base v1.Image, entries ...tarEntry) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.linkname, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.data)), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			io.WriteString(tw, e.data)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// hostProbe runs secprobe on the host, outside any filter: the control that
// shows a probe the container refuses is one the kernel here would allow.
func hostProbe(t *testing.T, probes ...string) map[string]string {
	t.Helper()
	bin, err := testimage.GoBinary("secprobe", secProbeSource)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(bin, probes...)
	if err != nil {
		t.Fatalf("secprobe on the host: %v: %s", err, out)
	}
	return probeResults(out)
}

// TestRuntimeDefaultSeccompRefusesIOUringAndAFALG runs the probes in a
// RuntimeDefault app: io_uring_setup and socket(AF_ALG) / socket(AF_VSOCK)
// fail with EPERM (1) from the filter, AF_INET sockets work.
func TestRuntimeDefaultSeccompRefusesIOUringAndAFALG(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.image("secprobe", secProbeImage(t))
	probes := []string{"io_uring_setup", "socket=38", "socket=40", "socket=2"}
	host := hostProbe(t, probes...)
	got := probeResults(pi.run(append([]string{"run", "--rm", img, "--", "/usr/local/bin/secprobe"}, probes...)...))
	t.Logf("host: %v, app: %v", host, got)
	for _, p := range probes[:3] {
		if host[p] == "1" {
			t.Logf("%s fails with EPERM on the host too: the container result proves nothing for it", p)
		}
		if got[p] != "1" {
			t.Errorf("%s in a RuntimeDefault app: %q, want EPERM (1)", p, got[p])
		}
	}
	if got["socket=2"] != "ok" {
		t.Errorf("socket(AF_INET) in a RuntimeDefault app: %q, want ok", got["socket=2"])
	}
	// Unconfined is the control: the same image gets io_uring where the
	// host has it.
	if host["io_uring_setup"] == "ok" {
		if out := probeResults(pi.run("run", "--rm", "--privileged", img, "--", "/usr/local/bin/secprobe", "io_uring_setup")); out["io_uring_setup"] != "ok" {
			t.Errorf("io_uring_setup in a privileged app: %q, want ok", out["io_uring_setup"])
		}
	}
}

// runCmd runs a host command and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestCRIFlyIsOptIn: a daemon with the default configuration refuses the
// fly handler; with cri.fly.enable it warns at start, refuses a fly pod
// that asks for its own network namespace, and runs one that asks for the
// host's, reporting NODE namespaces, and whose app is in the host's
// network and PID namespaces.
func TestCRIFlyIsOptIn(t *testing.T) {
	ci := newCRIInstance(t)
	ci.startDaemon()
	ctx := ctxT(t)
	hostCfg := func(name string) *runtimeapi.PodSandboxConfig {
		c := ci.sandboxConfig(name)
		c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE,
		}}
		return c
	}
	_, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: hostCfg("fly-off"), RuntimeHandler: "fly"})
	wantCode(t, err, codes.InvalidArgument, "fly handler in the default configuration")
	ci.stopDaemon()

	f, err := os.OpenFile(ci.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "\n[cri.fly]\nenable = true\n")
	f.Close()
	ci.startDaemon()
	if !strings.Contains(ci.out.String(), "the fly flavor is enabled") {
		t.Errorf("no warning at start with cri.fly.enable:\n%s", ci.out)
	}
	_, err = ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: ci.sandboxConfig("fly-isolated"), RuntimeHandler: "fly"})
	wantCode(t, err, codes.InvalidArgument, "fly pod asking for its own network namespace")

	r, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: hostCfg("fly-host"), RuntimeHandler: "fly"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: r.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	ns := st.GetStatus().GetLinux().GetNamespaces().GetOptions()
	if ns.Network != runtimeapi.NamespaceMode_NODE || ns.Pid != runtimeapi.NamespaceMode_NODE || ns.Ipc != runtimeapi.NamespaceMode_NODE {
		t.Fatalf("fly pod namespaces reported %v, want NODE", ns)
	}
	ref := ci.pushBusybox()
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	cc := containerConfig("ns", ref, nil, "sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/pid; sleep 3600")
	cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE,
	}}}
	c, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: r.PodSandboxId, Config: cc, SandboxConfig: hostCfg("fly-host")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatal(err)
	}
	hostNet, _ := os.Readlink("/proc/self/ns/net")
	hostPID, _ := os.Readlink("/proc/self/ns/pid")
	ci.waitLog(filepath.Join(ci.logs, "fly-host", "ns/0.log"), "stdout F "+hostNet, "stdout F "+hostPID)
	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: r.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: r.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
}
