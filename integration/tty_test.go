package integration

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/integration/hostcgroup"
	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/stage1-runc/proto"
	"github.com/runclet/runclet/tty/crilog"
)

func (pi *podInstance) linegenImage() string {
	pi.t.Helper()
	base, err := testimage.Busybox()
	if err != nil {
		pi.t.Fatal(err)
	}
	l, err := testimage.GoProgram("linegen", testimage.LinegenSource)
	if err != nil {
		pi.t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		pi.t.Fatal(err)
	}
	return pi.image("linegen", img)
}

func readRecords(t *testing.T, path string) []crilog.Record {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []crilog.Record
	if len(data) == 0 {
		return nil // a log reopened just before the app ended
	}
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		r, err := crilog.ParseRecord(line)
		if err != nil {
			t.Fatalf("malformed log line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestCRILogFormatSplitsAndStreams(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "-d", img, "--", "sh", "-c",
		"head -c 102400 /dev/zero | tr '\\0' a; echo; echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf tail"))
	p := pi.waitApp(podID, "busybox")
	recs := readRecords(t, p.Apps[0].LogPath)
	var kinds []string
	for _, r := range recs {
		k := string(r.Stream) + " "
		if r.Partial {
			k += "P "
		} else {
			k += "F "
		}
		if len(r.Content) > 20 {
			k += strconv.Itoa(len(r.Content))
		} else {
			k += string(r.Content)
		}
		kinds = append(kinds, k)
	}
	// The two streams are separate pipes read concurrently, so their
	// records interleave in the file; within a stream the order holds.
	var out, errs []string
	for _, k := range kinds {
		if strings.HasPrefix(k, "stderr") {
			errs = append(errs, k)
		} else {
			out = append(out, k)
		}
	}
	// 100 KiB = 6 records of 16 KiB marked partial, then the rest with F.
	wantOut := "stdout P 16384|stdout P 16384|stdout P 16384|stdout P 16384|stdout P 16384|stdout P 16384|stdout F 4096|stdout F out1|stdout F out2|stdout P tail"
	if strings.Join(out, "|") != wantOut || strings.Join(errs, "|") != "stderr F err1|stderr F err2" {
		t.Fatalf("records:\nstdout %v\nstderr %v\nwant stdout %s", out, errs, wantOut)
	}
	raw, _ := os.ReadFile(p.Apps[0].LogPath)
	first := strings.SplitN(string(raw), " ", 2)[0]
	if _, err := time.Parse(time.RFC3339Nano, first); err != nil || !strings.HasSuffix(first, "Z") {
		t.Fatalf("timestamp %q: %v", first, err)
	}
}

func TestLogRotationUnderLoadLosesNoLine(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.linegenImage()
	const lines = 3_000_000 // ~285 MB of output
	podID := lastLine(pi.run("run", "-d", img, "--", "/usr/local/bin/linegen", strconv.Itoa(lines)))
	p := pi.status(podID)
	logPath := p.Apps[0].LogPath
	exitFile := filepath.Join(pi.root, "pods", podID, "apps", p.Apps[0].ID, "exit.json")
	var rotated []string
	start := time.Now()
	for i := 0; ; i++ {
		time.Sleep(20 * time.Millisecond)
		if _, err := os.Stat(exitFile); err == nil {
			break
		}
		name := logPath + "." + strconv.Itoa(i)
		if err := os.Rename(logPath, name); err != nil {
			t.Fatal(err)
		}
		rotated = append(rotated, name)
		if _, stderr, err := pi.try("app", "reopen-log", podID, "linegen"); err != nil {
			if strings.Contains(stderr, "not running") {
				break
			}
			t.Fatalf("reopen: %v %s", err, stderr)
		}
		if _, err := os.Stat(logPath); err != nil {
			t.Fatalf("log not recreated by reopen: %v", err)
		}
	}
	elapsed := time.Since(start)
	pi.waitApp(podID, "linegen")
	seen := make([]bool, lines)
	count := 0
	files := rotated
	if _, err := os.Stat(logPath); err == nil {
		files = append(files, logPath) // absent when the app ended between a rename and its reopen
	}
	for _, f := range files {
		for _, r := range readRecords(t, f) {
			if r.Partial {
				t.Fatalf("unexpected partial record in %s", f)
			}
			n, err := strconv.Atoi(string(r.Content[:bytes.IndexByte(r.Content, ' ')]))
			if err != nil || n < 0 || n >= lines || seen[n] {
				t.Fatalf("line %q: bad or duplicated", r.Content[:20])
			}
			seen[n] = true
			count++
		}
	}
	if count != lines {
		t.Fatalf("%d of %d lines in the logs after %d rotations", count, lines, len(rotated))
	}
	if len(rotated) < 3 {
		t.Fatalf("only %d rotations happened while the app wrote; the test did not exercise rotation", len(rotated))
	}
	t.Logf("%d lines (%d MB) through %d rotations in %s (%.0f MB/s)", lines, lines*100>>20, len(rotated), elapsed, float64(lines*100)/1e6/elapsed.Seconds())
}

func TestAttachTwoClientsAndStuckClient(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "-d", img, "--", "sh", "-c", "sleep 1; i=0; while [ $i -lt 30 ]; do echo line $i; i=$((i+1)); sleep 0.05; done; exit 3"))
	attach := func() *exec.Cmd {
		c := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "attach", "--no-stdin", podID)
		return c
	}
	a1, a2 := attach(), attach()
	var o1, o2 bytes.Buffer
	a1.Stdout, a2.Stdout = &o1, &o2
	if err := a1.Start(); err != nil {
		t.Fatal(err)
	}
	if err := a2.Start(); err != nil {
		t.Fatal(err)
	}
	// A client that never reads: the app and the others must not notice.
	stuck, r, err := proto.Dial(context.Background(), filepath.Join(pi.runRoot, "pods", podID, "supervisor.sock"), proto.MethodAttach, proto.AttachParams{Name: pi.status(podID).Apps[0].ID, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if err := proto.ReadResponse(r, nil); err != nil {
		t.Fatal(err)
	}
	e1, e2 := a1.Wait(), a2.Wait()
	for _, e := range []error{e1, e2} {
		if ee, ok := e.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Fatalf("attach should end with the app's exit code 3: %v", e)
		}
	}
	if o1.String() != o2.String() || !strings.Contains(o1.String(), "line 29\n") {
		t.Fatalf("two attached clients saw different output:\n%q\n%q", o1.String(), o2.String())
	}
	if logs := pi.run("logs", podID); !strings.HasSuffix(logs, o1.String()) {
		t.Fatalf("attach output is not what the log has:\nlog %q\nattach %q", logs, o1.String())
	}
}

func TestExecUserCgroupAndTimeout(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "-d", "--user", "1000:50000", img, "--", "sleep", "300"))
	p := pi.status(podID)
	if out := pi.run("exec", podID, "--", "id"); !strings.HasPrefix(out, "uid=1000(default-user) gid=50000") {
		t.Fatalf("exec runs as %q, want the app's user", out)
	}
	// The exec's process sits in the app's cgroup.
	dir, _ := hostcgroup.Dir("pids", appCgroup(p.CgroupParent, p.ID, p.Apps[0].ID))
	cg := filepath.Join(dir, "cgroup.procs")
	done := make(chan string, 1)
	go func() {
		// The trailing echo keeps sh from exec'ing sleep in its place.
		out, _, _ := pi.try("exec", podID, "--", "sh", "-c", "echo started; sleep 2; echo done")
		done <- out
	}()
	var found bool
	for i := 0; i < 40 && !found; i++ {
		time.Sleep(50 * time.Millisecond)
		procs, _ := os.ReadFile(cg)
		for _, pid := range strings.Fields(string(procs)) {
			if comm, _ := os.ReadFile("/proc/" + pid + "/cmdline"); bytes.HasPrefix(comm, []byte("sh\x00-c\x00echo started")) {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("exec process not found in %s", cg)
	}
	<-done
	if _, stderr, err := pi.try("exec", podID, "--", "sh", "-c", "exit 42"); err == nil || err.(*exec.ExitError).ExitCode() != 42 {
		t.Fatalf("exit code not propagated: %v %s", err, stderr)
	}
	// A timeout kills the exec even though a background child holds stdout.
	start := time.Now()
	_, stderr, err := pi.try("exec", "--timeout", "1s", podID, "--", "sh", "-c", "sleep 100 & echo bg; sleep 100")
	if err == nil || !strings.Contains(stderr, "timed out") || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout: err %v stderr %q after %s", err, stderr, time.Since(start))
	}
	time.Sleep(200 * time.Millisecond)
	procs, _ := os.ReadFile(cg)
	for _, pid := range strings.Fields(string(procs)) {
		if comm, _ := os.ReadFile("/proc/" + pid + "/cmdline"); bytes.HasPrefix(comm, []byte("sleep\x00100")) {
			t.Fatalf("background child %s of the timed-out exec survived", pid)
		}
	}
}

// openPty returns a pty master and the slave's path.
func openPty(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return m, "/dev/pts/" + strconv.Itoa(n)
}

// terminal is the test's side of a pty: everything the program shows is
// kept and can be waited for.
type terminal struct {
	t         *testing.T
	master    *os.File
	slavePath string
	// keep holds the slave open for the test's whole life: once every
	// slave fd was closed, reads of the master fail (EIO) and the output
	// copier would stop.
	keep *os.File
	out  syncBuffer
}

func newTerminal(t *testing.T) *terminal {
	m, slavePath := openPty(t)
	keep, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keep.Close(); m.Close() })
	tm := &terminal{t: t, master: m, slavePath: slavePath, keep: keep}
	go io.Copy(&tm.out, m)
	return tm
}

// waitFor fails the test unless the terminal shows want within 10 s.
func (tm *terminal) waitFor(want string) {
	tm.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(tm.out.String(), want) {
			return
		}
	}
	tm.t.Fatalf("terminal never showed %q; it showed %q", want, tm.out.String())
}

// termios is the slave's line discipline settings: a program that put the
// terminal into raw mode must give it back as it found it.
func (tm *terminal) termios() unix.Termios {
	tm.t.Helper()
	tio, err := unix.IoctlGetTermios(int(tm.keep.Fd()), unix.TCGETS)
	if err != nil {
		tm.t.Fatal(err)
	}
	return *tio
}

// start runs cmd with the terminal as its controlling terminal and stdio.
func (tm *terminal) start(cmd *exec.Cmd) {
	tm.t.Helper()
	slave, err := os.OpenFile(tm.slavePath, os.O_RDWR, 0)
	if err != nil {
		tm.t.Fatal(err)
	}
	defer slave.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		tm.t.Fatal(err)
	}
}

func TestTtyExecAndResize(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "-d", img, "--", "sleep", "300"))
	master, slavePath := openPty(t)
	defer master.Close()
	unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "exec", "-i", "-t", podID, "--", "sh")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := bufio.NewReader(master)
	var seen strings.Builder // since the last match
	show := func(want string, within time.Duration) bool {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			master.SetReadDeadline(deadline)
			b, err := out.ReadByte()
			if err != nil {
				break
			}
			seen.WriteByte(b)
			if strings.Contains(seen.String(), want) {
				seen.Reset()
				return true
			}
		}
		return false
	}
	expect := func(want string) {
		t.Helper()
		if !show(want, 10*time.Second) {
			t.Fatalf("terminal never showed %q; saw %q", want, seen.String())
		}
	}
	master.Write([]byte("stty size\r"))
	expect("24 80")
	unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 111})
	// SIGWINCH → resize frame → the app's pty, asynchronously: ask until
	// the new size shows (a size that never arrives fails in expect).
	for i := 0; ; i++ {
		master.Write([]byte("stty size\r"))
		if show("33 111", 500*time.Millisecond) {
			break
		}
		if i == 20 {
			t.Fatalf("the app's terminal never got the new size; saw %q", seen.String())
		}
	}
	master.Write([]byte("exit 5\r"))
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
		t.Fatalf("tty exec exit: %v", err)
	}
}

func TestRunInteractive(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	// -i with pipes: stdin reaches the app and its end closes the app's stdin.
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "run", "--rm", "-i", img, "--", "sh", "-c", "cat; echo after-eof")
	cmd.Stdin = strings.NewReader("piped in\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "piped in\nafter-eof\n" {
		t.Fatalf("run -i: %v, output %q", err, out)
	}
	// -i -t on a real terminal: the shell's own prompt and output show,
	// its exit code comes back, and the terminal leaves raw mode.
	term := newTerminal(t)
	before := term.termios()
	tty := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "run", "--rm", "-i", "-t", img, "--", "sh")
	term.start(tty)
	term.waitFor("# ")
	term.master.Write([]byte("echo answer=$((6*7)); [ -t 0 ] && exit 9\r"))
	term.waitFor("answer=42")
	err = tty.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 9 {
		t.Fatalf("run -i -t: %v (want exit 9: stdin is a terminal)", err)
	}
	if after := term.termios(); after != before {
		t.Fatalf("terminal not restored after run -t exited:\nbefore %+v\nafter  %+v", before, after)
	}
}

func TestAttachDetachKeysLeaveTheAppRunning(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	term := newTerminal(t)
	before := term.termios()
	cmd := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "run", "--name", "detachme", "-i", "-t", img, "--", "sh")
	term.start(cmd)
	// Send the detach keys only once the shell answers: runclet has put the
	// terminal in raw mode by then. Keys typed earlier meet the cooked
	// terminal, whose IXON eats ctrl-q (START).
	term.master.Write([]byte("echo up-$((20+3))\r"))
	term.waitFor("up-23")
	term.master.Write([]byte{16, 17}) // ctrl-p ctrl-q
	if err := cmd.Wait(); err != nil {
		t.Fatalf("detaching should exit 0: %v; terminal showed %q", err, term.out.String())
	}
	if after := term.termios(); after != before {
		t.Fatalf("terminal not restored after detach:\nbefore %+v\nafter  %+v", before, after)
	}
	p := pi.status("detachme")
	if p.State != "ready" || p.Apps[0].State != "running" {
		t.Fatalf("after detach: %+v", p)
	}
	// Attach again (no stdin): it is connected once it shows what the app
	// writes; then the app is killed from outside (an interactive shell
	// ignores SIGTERM) and attach exits with the app's code.
	var attOut syncBuffer
	att := exec.Command(runcletBin, "--config", pi.config, "--root", pi.root, "--run-root", pi.runRoot, "attach", "--no-stdin", "detachme")
	att.Stdout, att.Stderr = &attOut, &attOut
	if err := att.Start(); err != nil {
		t.Fatal(err)
	}
	connected := false
	for i := 0; i < 100 && !connected; i++ {
		pi.run("exec", "detachme", "--", "sh", "-c", "echo attached-marker > /proc/1/fd/1")
		time.Sleep(50 * time.Millisecond)
		connected = strings.Contains(attOut.String(), "attached-marker")
	}
	if !connected {
		att.Process.Kill()
		att.Wait()
		t.Fatalf("attach never showed the app's output: %q", attOut.String())
	}
	pi.run("app", "stop", "--timeout", "1s", "detachme", "busybox")
	err := att.Wait()
	code := pi.status("detachme").Apps[0].ExitCode
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 137 || code != 137 {
		t.Fatalf("attach exit %v, app exit code %d; want both 137 (SIGKILL after the ignored SIGTERM)", err, code)
	}
}
