package testimage

import (
	"archive/tar"
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runclet/runclet/internal/testutil"
)

// dynamicBusybox builds DynamicBusybox or skips: it needs apt-get and a
// Debian mirror the first time on a host.
func dynamicBusybox(t *testing.T) {
	t.Helper()
	if _, err := dynamicBusyboxBinary(); err != nil {
		t.Skipf("no dynamic busybox: %v", err)
	}
}

func TestDynamicBusyboxLayout(t *testing.T) {
	dynamicBusybox(t)
	img := Must(DynamicBusybox())
	root := layerFiles(t, img, 0)

	bb, ok := root["bin/["]
	if !ok || bb.hdr.Typeflag != tar.TypeReg || bb.hdr.Mode != 0o755 || len(bb.data) == 0 {
		t.Fatalf("bin/[ should be the busybox binary, got %+v", bb.hdr)
	}
	for _, name := range []string{"bin/busybox", "bin/sh", "bin/ls", "bin/cat", "bin/top", "bin/id"} {
		e, ok := root[name]
		if !ok || e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != "bin/[" {
			t.Errorf("%s should be a hard link to bin/[, got %+v", name, e.hdr)
		}
	}
	interp := false
	for name, e := range root {
		if strings.HasPrefix(name, "lib") && e.hdr.Typeflag == tar.TypeReg {
			interp = interp || strings.Contains(name, "ld-linux")
		}
	}
	if !interp {
		t.Error("no dynamic loader (lib*/ld-linux*) in the layer")
	}
	if got := string(root["etc/passwd"].data); !strings.Contains(got, "www-data:x:33:33:") || !strings.Contains(got, "nobody:x:65534:") {
		t.Errorf("etc/passwd lacks www-data or nobody:\n%s", got)
	}

	tools := layerFiles(t, img, 1)
	if e := tools["usr/bin/pgrep"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != "usr/bin/ipcs" {
		t.Errorf("usr/bin/pgrep should be a hard link to usr/bin/ipcs, got %+v", e.hdr)
	}

	d := digest(t, img)
	resetCache()
	if d2 := digest(t, Must(DynamicBusybox())); d2 != d {
		t.Errorf("rebuilt image has digest %s, first build %s", d2, d)
	}
}

// extract writes an image's merged filesystem to a new directory.
func extract(t *testing.T, layers ...map[string]entry) string {
	t.Helper()
	dir := t.TempDir()
	for _, files := range layers {
		// Directories and files before hard links: map order is random.
		var links []entry
		for _, e := range files {
			p := filepath.Join(dir, e.hdr.Name)
			switch e.hdr.Typeflag {
			case tar.TypeDir:
				os.MkdirAll(p, 0o755)
			case tar.TypeReg:
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, e.data, os.FileMode(e.hdr.Mode).Perm()); err != nil {
					t.Fatal(err)
				}
			case tar.TypeLink:
				links = append(links, e)
			}
		}
		for _, e := range links {
			if err := os.Link(filepath.Join(dir, e.hdr.Linkname), filepath.Join(dir, e.hdr.Name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// TestDynamicBusyboxRunsFromPath checks, in a chroot, that the image's
// busybox runs with the libraries it carries and that its shell executes
// the /bin/<applet> it finds rather than running the applet itself.
func TestDynamicBusyboxRunsFromPath(t *testing.T) {
	testutil.RequiresRoot(t, "chroot")
	dynamicBusybox(t)
	img := Must(DynamicBusybox())
	dir := extract(t, layerFiles(t, img, 0), layerFiles(t, img, 1))
	run := func(script string) (string, error) {
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
		cmd.Dir = "/"
		cmd.Env = []string{DefaultPath}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("echo hello; id -nu nobody; ls /bin/ls"); err != nil || out != "hello\nnobody\n/bin/ls\n" {
		t.Fatalf("running the image's busybox: %v\n%s", err, out)
	}
	if err := os.Remove(filepath.Join(dir, "bin", "ls")); err != nil {
		t.Fatal(err)
	}
	if out, err := run("ls /"); err == nil || !strings.Contains(out, "ls: not found") {
		t.Errorf("sh -c ls without /bin/ls: want \"ls: not found\", got %v\n%s", err, out)
	}
}

func TestProcTools(t *testing.T) {
	bin := Must(GoBinary("proctools", ProcToolsSource))
	dir := t.TempDir()
	for _, name := range []string{"pgrep", "ipcs"} {
		if err := os.Symlink(bin, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Skipf("no sleep on this host: %v", err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()

	out, err := exec.Command(filepath.Join(dir, "pgrep"), "-x", "sleep").Output()
	if err != nil || !strings.Contains("\n"+string(out), "\n"+strconv.Itoa(sleeper.Process.Pid)+"\n") {
		t.Errorf("pgrep -x sleep: %v, output %q; want pid %d in it", err, out, sleeper.Process.Pid)
	}
	out, err = exec.Command(filepath.Join(dir, "pgrep"), "^no-such-process-name$").Output()
	if code := exitCode(err); code != 1 || len(out) != 0 {
		t.Errorf("pgrep with no match: exit %d, output %q; want exit 1, no output", code, out)
	}

	out, err = exec.Command(filepath.Join(dir, "ipcs"), "-m").Output()
	if _, statErr := os.Stat("/proc/sysvipc/shm"); statErr != nil {
		t.Skip("no /proc/sysvipc here")
	}
	if err != nil || !strings.Contains(string(out), "------ Shared Memory Segments --------\nkey        shmid") {
		t.Errorf("ipcs -m: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestWebServer(t *testing.T) {
	bin := Must(GoBinary("webserver", WebServerSource))
	dir := t.TempDir()
	exe := filepath.Join(dir, "nginx")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("welcome\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(dir, "run", "nginx.pid")
	cmd := exec.Command(exe, "-title", "nginx: master process", "-listen", "127.0.0.1:0", "-root", dir, "-pidfile", pidfile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	// "nginx: serving DIR on 127.0.0.1:PORT (pid N)"
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the startup line: %v", err)
	}
	_, after, _ := strings.Cut(line, " on ")
	addr, _, _ := strings.Cut(after, " ")
	if !strings.HasPrefix(line, "nginx: serving ") || addr == "" {
		t.Fatalf("startup line %q", line)
	}
	go io.Copy(io.Discard, stderr)

	pid := strconv.Itoa(cmd.Process.Pid)
	if b, err := os.ReadFile(pidfile); err != nil || string(b) != pid+"\n" {
		t.Errorf("pidfile: %q, %v; want %q", b, err, pid+"\n")
	}
	if b, _ := os.ReadFile("/proc/" + pid + "/comm"); string(b) != "nginx\n" {
		t.Errorf("comm = %q, want nginx", b)
	}
	if b, _ := os.ReadFile("/proc/" + pid + "/cmdline"); !strings.HasPrefix(string(b), "nginx: master process "+exe+"\x00") {
		t.Errorf("cmdline = %q, want it to start with the master process title", b)
	}

	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "welcome\n" {
		t.Errorf("GET /: %d %q", resp.StatusCode, body)
	}

	cmd.Process.Signal(syscall.SIGQUIT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit on SIGQUIT: %v", err)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("pidfile left behind: %v", err)
	}
}
