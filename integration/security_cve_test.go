package integration

// Attacks on the container runtime, performed for real: the RuntimeDefault
// seccomp profile, and the runc CVE classes (hostile images and hostile
// container processes). Each test fails if the attack succeeds.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	"strings"
	"syscall"
	"time"
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
		case strings.HasPrefix(p, "write="):
			// Opens for writing and writes a marker: what an attacker
			// would do to core_pattern, a masked file, the runtime binary.
			f, err := os.OpenFile(p[6:], os.O_WRONLY, 0)
			if err == nil {
				_, err = f.WriteString("|/bin/false runclet-cve-canary\n")
				f.Close()
			}
			res = errnoOf(unwrap(err))
		case strings.HasPrefix(p, "read="):
			b := make([]byte, 64)
			f, err := os.Open(p[5:])
			n := 0
			if err == nil {
				n, err = f.Read(b)
				f.Close()
				if err != nil && err.Error() == "EOF" {
					err = nil
				}
			}
			res = errnoOf(unwrap(err))
			if err == nil {
				res = "ok:" + strconv.Itoa(n)
			}
		case strings.HasPrefix(p, "exe-race="):
			res = exeRace(p[9:])
		default:
			res = "unknown probe"
		}
		fmt.Printf("%s: %s\n", p, res)
	}
}

func unwrap(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// exeRace is CVE-2019-5736 from inside: for the given time, every process
// of the container other than this one (a runtime's init joining it for
// an exec) has its /proc/PID/exe opened for writing, directly and by
// reopening an O_PATH handle after the process has exec'd. It prints
// where the ready marker goes, then how many foreign processes it saw and
// how many of their executables it could open for writing.
func exeRace(ms string) string {
	d, _ := strconv.Atoi(ms)
	self := strconv.Itoa(os.Getpid())
	seen := map[string]bool{}
	var held []int
	written := 0
	fmt.Println("exe-race: ready")
	for end := time.Now().Add(time.Duration(d) * time.Millisecond); time.Now().Before(end); {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid := e.Name()
			if pid[0] < '0' || pid[0] > '9' || pid == self {
				continue
			}
			fd, err := syscall.Open("/proc/"+pid+"/exe", 0x200000|syscall.O_CLOEXEC, 0) // O_PATH
			if err != nil {
				continue
			}
			if !foreign(pid, fd) {
				syscall.Close(fd) // a program of the container's own rootfs
				continue
			}
			seen[pid] = true
			held = append(held, fd)
			if w, err := syscall.Open("/proc/"+pid+"/exe", syscall.O_WRONLY, 0); err == nil {
				syscall.Write(w, []byte("runclet-cve-canary"))
				syscall.Close(w)
				written++
			}
		}
		for _, fd := range held {
			if w, err := syscall.Open("/proc/self/fd/"+strconv.Itoa(fd), syscall.O_WRONLY, 0); err == nil {
				syscall.Write(w, []byte("runclet-cve-canary"))
				syscall.Close(w)
				written++
			}
		}
		if len(held) > 200 {
			for _, fd := range held {
				syscall.Close(fd)
			}
			held = held[:0]
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Sprintf("seen=%d written=%d", len(seen), written)
}

// foreign reports whether the executable behind fd (an O_PATH handle on
// /proc/PID/exe) is not a file of this container's rootfs, whose programs
// all live on the filesystem of "/": the runtime's binary (or its sealed
// copy) does not.
func foreign(pid string, fd int) bool {
	var st, root syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil || syscall.Stat("/", &root) != nil {
		return false
	}
	return st.Dev != root.Dev
}
`

// probeResults parses secprobe's output, as printed or from a CRI log
// file (whose lines start "TIME STREAM F|P ").
func probeResults(out string) map[string]string {
	res := map[string]string{}
	for _, line := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 && (f[1] == "stdout" || f[1] == "stderr") && (f[2] == "F" || f[2] == "P") {
			line = f[3]
		}
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

// fileHash is the SHA-256 of a host file, for "byte-identical" checks.
func fileHash(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// appLog returns the log of the pod's first app once it has exited.
func (pi *podInstance) appLog(podID string) string {
	pi.t.Helper()
	p := pi.status(podID)
	if len(p.Apps) == 0 {
		pi.t.Fatalf("pod %s has no app", podID)
	}
	p = pi.waitApp(podID, p.Apps[0].Name)
	data, err := os.ReadFile(p.Apps[0].LogPath)
	if err != nil {
		pi.t.Fatal(err)
	}
	return string(data)
}

// TestCVE2019_5736RuntimeBinaryStaysIntact is CVE-2019-5736, from a hostile
// image and from a hostile container process:
//   - entrypoints that re-execute the runtime's init through /proc/self/exe
//     (a symlink to it, and a script whose interpreter it is);
//   - an app that, while `runclet exec` runs commands in its container 30
//     times, opens /proc/PID/exe of every process of the container that is
//     not one of its own programs (the runtime's init joining it) for
//     writing, directly and by reopening an O_PATH handle after that
//     process has exec'd.
//
// runclet and stage1-runc on the host must stay byte-identical and the app
// must never get one of those executables open for writing.
func TestCVE2019_5736RuntimeBinaryStaysIntact(t *testing.T) {
	pi := newPodInstance(t)
	bins := map[string]string{}
	for _, b := range []string{runcletBin, filepath.Join(filepath.Dir(runcletBin), "stage1-runc")} {
		bins[b] = fileHash(t, b)
	}
	img := pi.image("cve-2019-5736", withEntries(t, secProbeImage(t),
		tarEntry{name: "evil", typ: tar.TypeSymlink, linkname: "/proc/self/exe"},
		tarEntry{name: "evil.sh", typ: tar.TypeReg, mode: 0o755, data: "#!/proc/self/exe init\n"},
	))
	for _, entry := range []string{"/evil", "/evil.sh"} {
		out, errOut, err := pi.try("run", "--rm", "--entrypoint", entry, img)
		t.Logf("entrypoint %s: err %v, stdout %q, stderr %q", entry, err, out, lastLine(errOut+"\n"))
	}

	// Unprivileged, the runtime's init is not dumpable, so the app cannot
	// even open its /proc/PID/exe; privileged (CAP_SYS_PTRACE) it can, and
	// only the sealed copy of the binary stands in the way.
	for _, privileged := range []bool{false, true} {
		args := []string{"run", "--detach", img, "--", "/usr/local/bin/secprobe", "exe-race=20000"}
		if privileged {
			args = []string{"run", "--detach", "--privileged", img, "--", "/usr/local/bin/secprobe", "exe-race=20000"}
		}
		podID := lastLine(pi.run(args...))
		execs := 0
		for i := 0; i < 30; i++ {
			if _, _, err := pi.try("exec", podID, "--", "true"); err == nil {
				execs++
			}
		}
		log := pi.appLog(podID)
		m := regexp.MustCompile(`exe-race=20000: seen=(\d+) written=(\d+)`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("privileged %v: no result from the racing app; log:\n%s", privileged, log)
		}
		t.Logf("privileged %v: %d execs; the app saw %s runtime processes and opened %s of their executables for writing", privileged, execs, m[1], m[2])
		if execs == 0 {
			t.Errorf("privileged %v: no exec succeeded: the race did not run", privileged)
		}
		if m[2] != "0" {
			t.Errorf("privileged %v: the container opened the runtime's executable for writing %s times", privileged, m[2])
		}
	}
	for b, h := range bins {
		if got := fileHash(t, b); got != h {
			t.Errorf("%s changed on the host (sha256 %s, was %s)", b, got, h)
		}
	}
}

// TestCVE2024_21626WorkdirProcSelfFd: a working directory of
// /proc/self/fd/N would, with a host directory's fd leaked into the
// runtime's init, start the app outside its root. For every small N the
// app either fails to start or is inside its rootfs: a host canary file
// is not reachable through ../.. from its working directory.
func TestCVE2024_21626WorkdirProcSelfFd(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	canary := filepath.Join(dir, "canary")
	if err := os.WriteFile(canary, []byte("host-canary-21626\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := strings.Repeat("../", 40)
	for n := 3; n <= 12; n++ {
		wd := fmt.Sprintf("/proc/self/fd/%d", n)
		out, errOut, err := pi.try("run", "--rm", "-w", wd, img, "--", "sh", "-c", "pwd; cat "+up+strings.TrimPrefix(canary, "/")+" 2>&1; true")
		if strings.Contains(out, "host-canary-21626") {
			t.Errorf("workdir %s: the app read the host's canary through its working directory: %q", wd, out)
		}
		if err != nil && strings.TrimSpace(errOut) == "" {
			t.Errorf("workdir %s: failed without saying why: %v", wd, err)
		}
	}
}

// hostileDevProc are images whose rootfs holds the symlinks of the 2025
// runc CVEs: /dev/null and /dev/console pointing at core_pattern (what
// masked paths and the console are bind-mounted from, CVE-2025-31133 and
// CVE-2025-52565), /dev/pts pointing into /proc/sys, and /dev and /proc
// themselves replaced by symlinks so that the runtime's mounts and procfs
// writes land elsewhere (CVE-2025-52881).
func hostileDevProc(t *testing.T, base v1.Image) map[string]v1.Image {
	dirEntry := func(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
	link := func(name, target string) tarEntry {
		return tarEntry{name: name, typ: tar.TypeSymlink, linkname: target}
	}
	return map[string]v1.Image{
		"dev-files": withEntries(t, base, dirEntry("dev"),
			link("dev/null", "/proc/sys/kernel/core_pattern"),
			link("dev/console", "/proc/sys/kernel/core_pattern"),
			link("dev/pts", "/proc/sys/kernel"),
			link("dev/ptmx", "/proc/sysrq-trigger")),
		"dev-dir":  withEntries(t, base, tarEntry{name: "dev", typ: tar.TypeSymlink, linkname: "/proc/sys/kernel"}),
		"proc-dir": withEntries(t, base, dirEntry("fakeproc"), tarEntry{name: "proc", typ: tar.TypeSymlink, linkname: "/fakeproc"}),
		"proc-up":  withEntries(t, base, tarEntry{name: "proc", typ: tar.TypeSymlink, linkname: "../../../../../../proc"}),
	}
}

// TestCVE2025HostileDevAndProcSymlinks runs each hostile image, with and
// without a terminal, as an app that then writes to core_pattern, to the
// masked files and to /dev/null and /dev/console, and reads the masked
// files. The host's core_pattern must stay as it was; the app either fails
// cleanly (an error that says why) or runs with masked files that read
// empty.
func TestCVE2025HostileDevAndProcSymlinks(t *testing.T) {
	pi := newPodInstance(t)
	const corePattern = "/proc/sys/kernel/core_pattern"
	before, err := os.ReadFile(corePattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if now, _ := os.ReadFile(corePattern); !bytes.Equal(now, before) {
			os.WriteFile(corePattern, before, 0o644)
		}
	})
	probes := []string{"write=" + corePattern, "write=/proc/kcore", "write=/proc/timer_list", "write=/dev/null", "write=/dev/console",
		"read=/proc/kcore", "read=/proc/timer_list", "read=/proc/keys", "read=/dev/null"}
	for name, img := range hostileDevProc(t, secProbeImage(t)) {
		ref := pi.image("cve-2025-"+name, img)
		for _, tty := range []bool{false, true} {
			args := []string{"run", "--detach", ref}
			if tty {
				args = []string{"run", "--detach", "--tty", ref}
			}
			out, errOut, err := pi.try(append(append(args, "--", "/usr/local/bin/secprobe"), probes...)...)
			what := fmt.Sprintf("%s (tty %v)", name, tty)
			if err != nil {
				if strings.TrimSpace(errOut) == "" {
					t.Errorf("%s: failed without saying why: %v", what, err)
				}
				t.Logf("%s: refused: %s", what, lastLine(errOut))
			} else {
				res := probeResults(pi.appLog(lastLine(out)))
				t.Logf("%s: ran: %v", what, res)
				if len(res) == 0 {
					t.Errorf("%s: the app ran but printed no results", what)
				}
				for _, masked := range []string{"read=/proc/kcore", "read=/proc/timer_list", "read=/proc/keys", "read=/dev/null"} {
					if r, ok := res[masked]; ok && strings.HasPrefix(r, "ok:") && r != "ok:0" {
						t.Errorf("%s: %s = %s: the masked file has content", what, masked, r)
					}
				}
				if res["write="+corePattern] == "ok" {
					t.Errorf("%s: the app could write core_pattern", what)
				}
			}
			if now, _ := os.ReadFile(corePattern); !bytes.Equal(now, before) {
				t.Fatalf("%s: the host's core_pattern changed to %q", what, now)
			}
		}
	}
}
