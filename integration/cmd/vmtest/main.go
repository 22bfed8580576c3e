// Command vmtest boots a Debian guest with systemd as PID 1 on the pure
// cgroup v2 hierarchy and runs runclet's cgroup-facing integration tests
// inside it, once per cgroup driver (cgroupfs and systemd). The host
// machine that CI runs on is cgroup v1 (hybrid) without systemd, so this is
// where runclet meets the configuration most Kubernetes nodes run.
//
// The guest image (Debian's kernel, initrd and an ext4 root made by
// debootstrap, see image.sh) is built once into the user cache dir
// (~/.cache/runclet-vm/<recipe hash>) and booted with -snapshot, so every run
// starts from the same disk. The host builds runclet, stage1-runc and the
// integration test binary and shares them read-only over virtio-9p; a unit
// in the guest runs them, writes logs and the exit code to a second,
// writable share and powers the guest off. vmtest exits with the tests'
// exit code. Run as root (debootstrap, the tests' own needs).
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/runclet/runclet/integration/testimage"
)

//go:embed image.sh
var imageRecipe []byte

// critestFocus, when set, runs critest's specs it matches in the guest too.
var critestFocus string

// imageSize is the guest root's size: sparse, and written through a
// -snapshot overlay, so only what the recipe installs takes room on disk.
const imageSize = "6G"

// defaultTests is the focused set: what touches cgroups, limits, OOM,
// stats and updates, pod removal and crash recovery, user namespaces.
const defaultTests = "^(TestCgroupPathOfSlices|TestCgroupV2.*|TestRunEchoAndExitCode|TestMemoryLimitOOMKillRecorded|TestCRIPodLifecycle|TestCRIStatsUpdateAndEvents|TestExecUserCgroupAndTimeout|TestCRIPodProcessesKilled|TestCRICrashRecovery|TestCRIUserNamespacePod|TestPodsOutliveStage0)$"

func main() {
	var (
		tests    = flag.String("run", defaultTests, "integration tests to run in the guest (go test -run regexp)")
		drivers  = flag.String("drivers", "cgroupfs,systemd", "cgroup drivers to run the tests with, comma-separated")
		accel    = flag.String("accel", "auto", "auto (KVM when a test boot works, else TCG), kvm or tcg")
		memMB    = flag.Int("m", 4096, "guest memory in MiB")
		smp      = flag.Int("smp", 2, "guest CPUs")
		timeout  = flag.Duration("timeout", 90*time.Minute, "the whole guest run, boot included")
		outDir   = flag.String("out", "", "directory for the console log and results (default: a new temp dir)")
		suite    = flag.String("suite", "bookworm", "Debian release of the guest")
		mirror   = flag.String("mirror", "", "Debian mirror (default: the first of the host's apt sources)")
		imageOnl = flag.Bool("image-only", false, "build (or find) the guest image and exit")
		critest  = flag.String("critest-focus", "", "also run critest in the guest, these specs (ginkgo focus regexp), with each driver; needs the critest binary make critest caches")
	)
	flag.Parse()
	critestFocus = *critest
	if err := run(*tests, *drivers, *accel, *memMB, *smp, *timeout, *outDir, *suite, *mirror, *imageOnl); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(2)
	}
}

type exitCode int

func (e exitCode) Error() string { return "tests exited with " + strconv.Itoa(int(e)) }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "vmtest %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(tests, drivers, accel string, memMB, smp int, timeout time.Duration, outDir, suite, mirror string, imageOnly bool) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: debootstrap, and the tests in the guest mirror the host's root tests")
	}
	for _, d := range strings.Split(drivers, ",") {
		if d != "cgroupfs" && d != "systemd" {
			return fmt.Errorf("-drivers: %q is not cgroupfs or systemd", d)
		}
	}
	if _, err := regexp.Compile(tests); err != nil {
		return fmt.Errorf("-run: %w", err)
	}
	t0 := time.Now()
	img, err := ensureImage(suite, mirror)
	if err != nil {
		return err
	}
	logf("guest image %s ready (%v)", img.dir, time.Since(t0).Round(time.Second))
	if imageOnly {
		return nil
	}
	if outDir == "" {
		if outDir, err = os.MkdirTemp("", "runclet-vmtest-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	share, err := os.MkdirTemp("", "runclet-vmtest-in-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(share)
	t1 := time.Now()
	if err := buildShare(share, tests, drivers); err != nil {
		return err
	}
	logf("binaries built (%v)", time.Since(t1).Round(time.Second))
	useKVM := false
	switch accel {
	case "kvm":
		useKVM = true
	case "tcg":
	case "auto":
		useKVM = kvmWorks(img)
	default:
		return fmt.Errorf("-accel %q: want auto, kvm or tcg", accel)
	}
	logf("accelerator: %s; results and console log in %s", map[bool]string{true: "kvm", false: "tcg"}[useKVM], outDir)
	return boot(img, share, outDir, useKVM, memMB, smp, timeout)
}

// guestImage is a built guest: kernel, initrd and root filesystem image.
type guestImage struct{ dir, kernel, initrd, root string }

func cacheBase() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "runclet-vm")
}

// ensureImage returns the cached guest for the recipe's hash, building it
// (and removing guests of older recipes) when there is none.
func ensureImage(suite, mirror string) (guestImage, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", suite, imageSize)
	h.Write(imageRecipe)
	key := suite + "-" + hex.EncodeToString(h.Sum(nil))[:16]
	base := cacheBase()
	dir := filepath.Join(base, key)
	img := guestImage{dir: dir, kernel: filepath.Join(dir, "vmlinuz"), initrd: filepath.Join(dir, "initrd.img"), root: filepath.Join(dir, "root.img")}
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return img, nil
	}
	if mirror == "" {
		var err error
		if mirror, err = aptMirror(); err != nil {
			return img, err
		}
	}
	for _, tool := range []string{"debootstrap", "mkfs.ext4", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			return img, fmt.Errorf("%s not found: apt-get install debootstrap e2fsprogs qemu-system-x86", tool)
		}
	}
	logf("building the guest image %s from %s (debootstrap; several minutes)", key, mirror)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return img, err
	}
	old, _ := filepath.Glob(filepath.Join(base, "*"))
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	rootDir := filepath.Join(tmp, "rootfs")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return img, err
	}
	recipe := filepath.Join(tmp, "image.sh")
	if err := os.WriteFile(recipe, imageRecipe, 0o755); err != nil {
		return img, err
	}
	log, err := os.Create(filepath.Join(tmp, "build.log"))
	if err != nil {
		return img, err
	}
	defer log.Close()
	steps := [][]string{
		{"sh", recipe, mirror, suite, rootDir},
		{"truncate", "-s", imageSize, filepath.Join(tmp, "root.img")},
		{"mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", rootDir, filepath.Join(tmp, "root.img")},
	}
	for _, s := range steps {
		t0 := time.Now()
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return img, fmt.Errorf("building the guest: %v: %w (log: %s)", s, err, log.Name())
		}
		logf("  %s: %v", s[0]+" "+filepath.Base(s[1]), time.Since(t0).Round(time.Second))
	}
	// The kernel and initrd come out of the root: the guest boots them
	// with -kernel/-initrd, so no boot loader is installed.
	kernels, _ := filepath.Glob(filepath.Join(rootDir, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return img, fmt.Errorf("guest root: want one /boot/vmlinuz-*, found %v", kernels)
	}
	version := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	for name, src := range map[string]string{"vmlinuz": kernels[0], "initrd.img": filepath.Join(rootDir, "boot", "initrd.img-"+version)} {
		if err := copyFile(src, filepath.Join(tmp, name)); err != nil {
			return img, err
		}
	}
	if err := os.RemoveAll(rootDir); err != nil {
		return img, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o644); err != nil {
		return img, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return img, err
	}
	for _, o := range old {
		if o != dir && o != tmp {
			logf("removing the guest of an older recipe: %s", o)
			os.RemoveAll(o)
		}
	}
	return img, nil
}

// aptMirror is the Debian archive the host's apt uses (the only one this
// machine may reach): the first deb.debian.org-style URI that is not the
// security archive, from one-line or deb822 sources.
func aptMirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	re := regexp.MustCompile(`(?m)^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			u := strings.TrimSuffix(m[1], "/")
			if strings.HasSuffix(u, "/debian") {
				return u, nil
			}
		}
	}
	return "", errors.New("no Debian mirror in /etc/apt/sources.list*: pass -mirror")
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// buildShare fills the read-only share: the binaries as `make build`
// makes them, the integration test binary, the test programs the images
// carry (the guest has no Go toolchain) and the script the guest runs.
func buildShare(share, tests, drivers string) error {
	bin := filepath.Join(share, "bin")
	builds := [][]string{
		{"build", "-trimpath", "-tags", "nri_no_wasm", "-o", filepath.Join(bin, "runclet"), "./cmd/runclet"},
		{"build", "-trimpath", "-tags", "seccomp", "-o", filepath.Join(bin, "stage1-runc"), "./cmd/stage1-runc"},
		{"test", "-c", "-o", filepath.Join(share, "integration.test"), "./integration"},
	}
	for _, b := range builds {
		cmd := exec.Command("go", b...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %v: %w", b, err)
		}
	}
	if critestFocus != "" {
		cacheDir, _ := os.UserCacheDir()
		bin := filepath.Join(cacheDir, "runclet-critest", "critest-v1.37.0")
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("-critest-focus: %s missing: run make critest once (it builds and caches it)", bin)
		}
		if out, err := exec.Command("cp", bin, filepath.Join(share, "critest")).CombinedOutput(); err != nil {
			return fmt.Errorf("copying critest: %v: %s", err, out)
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(share, "critest-harness"), "./integration/cmd/critest")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the critest harness: %w", err)
		}
		// The harness's images: Debian's dynamically linked busybox and
		// its Go programs, all cached on the host first.
		if _, err := testimage.DynamicBusybox(); err != nil {
			return fmt.Errorf("building the critest images' busybox: %w", err)
		}
	}
	// The test images' Go programs are compiled into the host's cache; the
	// guest gets a copy of that cache.
	if _, err := testimage.Tools(); err != nil {
		return fmt.Errorf("building the test images' programs: %w", err)
	}
	cacheDir, _ := os.UserCacheDir()
	cp := exec.Command("cp", "-a", filepath.Join(cacheDir, "runclet-testimage"), filepath.Join(share, "testimage-cache"))
	if out, err := cp.CombinedOutput(); err != nil {
		return fmt.Errorf("copying the test image cache: %v: %s", err, out)
	}
	script := guestScript(tests, strings.Split(drivers, ","))
	return os.WriteFile(filepath.Join(share, "run.sh"), []byte(script), 0o755)
}

// guestScript is what the guest's vmtest unit runs: it records the cgroup
// setup it found, then runs the tests once per driver.
func guestScript(tests string, drivers []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `set -u
out=/vmtest/out
# A system unit has no HOME: the test image programs' cache is found
# through it (os.UserCacheDir).
export HOME=/root
mkdir -p /opt/vmtest /root/.cache
cp -a /vmtest/in/bin /opt/vmtest/bin
cp /vmtest/in/integration.test /opt/vmtest/
cp -a /vmtest/in/testimage-cache /root/.cache/runclet-testimage
# The tests' temporary dirs (data roots included) on the ext4 root, not the
# /tmp tmpfs: id-mapped mounts of tmpfs need Linux 6.3, the guest runs 6.1,
# and a node keeps /var/lib/runclet on a disk filesystem anyway.
export TMPDIR=/var/tmp/vmtest
mkdir -p $TMPDIR
{
  echo "kernel: $(uname -r)"; echo "cmdline: $(cat /proc/cmdline)"
  echo "pid1: $(cat /proc/1/comm)"; echo "cgroupfs: $(stat -fc %%T /sys/fs/cgroup)"
  echo "root controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
  echo "systemd: $(systemctl --version | head -1)"
  echo "uptime at start: $(cut -d' ' -f1 /proc/uptime)"
} > $out/guest-info.txt
cat $out/guest-info.txt
code=0
`)
	for _, d := range drivers {
		fmt.Fprintf(&b, `echo "== %[1]s driver"
start=$(date +%%s)
cd /opt/vmtest
RUNCLET_TEST_BINDIR=/opt/vmtest/bin RUNCLET_TEST_CGROUP_DRIVER=%[1]s ./integration.test -test.v -test.count=1 -test.timeout 80m -test.run '%[2]s' > $out/integration-%[1]s.log 2>&1
rc=$?
echo "%[1]s: exit $rc in $(( $(date +%%s) - start ))s" | tee -a $out/summary.txt
grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|(PASS|FAIL|ok)$)' $out/integration-%[1]s.log | grep -v '=== RUN' | tee -a $out/summary.txt
[ $rc -eq 0 ] || code=1
`, d, strings.ReplaceAll(tests, "'", `'\''`))
		if critestFocus != "" {
			fmt.Fprintf(&b, `start=$(date +%%s)
cp /vmtest/in/critest /vmtest/in/critest-harness /opt/vmtest/
/opt/vmtest/critest-harness -runclet /opt/vmtest/bin/runclet -critest /opt/vmtest/critest -cgroup-driver %[1]s -focus '%[2]s' > $out/critest-%[1]s.log 2>&1
rc=$?
echo "critest %[1]s: exit $rc in $(( $(date +%%s) - start ))s" | tee -a $out/summary.txt
tail -n 15 $out/critest-%[1]s.log | tee -a $out/summary.txt
[ $rc -eq 0 ] || code=1
`, d, strings.ReplaceAll(critestFocus, "'", `'\''`))
		}
	}
	b.WriteString("journalctl -b --no-pager > $out/journal.txt 2>&1\necho $code > $out/exit-code\nsync\n")
	return b.String()
}

// kvmWorks boots the guest kernel under KVM without a root: a usable KVM
// gets as far as the kernel's panic about the missing root, an unusable
// one (this machine's PVM /dev/kvm with a normal kernel) stops with a KVM
// internal error or nothing at all.
func kvmWorks(img guestImage) bool {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "512",
		"-kernel", img.kernel, "-append", "console=ttyS0 panic=-1 root=/dev/null", "-nographic",
		"-no-reboot", "-nic", "none", "-serial", "stdio", "-monitor", "none")
	out, _ := cmd.CombinedOutput()
	ok := strings.Contains(string(out), "Kernel panic") || strings.Contains(string(out), "VFS:")
	if !ok {
		logf("KVM test boot failed (%s), using TCG", firstLine(string(out)))
	}
	return ok
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "KVM") || strings.Contains(l, "error") {
			return strings.TrimSpace(l)
		}
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return strings.TrimSpace(s)
}

// boot runs the guest to its power-off and returns the tests' result.
func boot(img guestImage, share, outDir string, kvm bool, memMB, smp int, timeout time.Duration) error {
	res := filepath.Join(outDir, "results")
	if err := os.MkdirAll(res, 0o777); err != nil {
		return err
	}
	os.Remove(filepath.Join(res, "exit-code"))
	args := []string{"-machine", "q35", "-m", strconv.Itoa(memMB), "-smp", strconv.Itoa(smp),
		"-kernel", img.kernel, "-initrd", img.initrd,
		"-append", "console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 systemd.show_status=1 panic=-1",
		"-drive", "file=" + img.root + ",if=virtio,format=raw,snapshot=on,cache=unsafe",
		"-fsdev", "local,id=vmin,path=" + share + ",security_model=none,readonly=on",
		"-device", "virtio-9p-pci,fsdev=vmin,mount_tag=vmin",
		"-fsdev", "local,id=vmout,path=" + res + ",security_model=none",
		"-device", "virtio-9p-pci,fsdev=vmout,mount_tag=vmout",
		"-nic", "none", "-nographic", "-no-reboot", "-monitor", "none",
		"-serial", "file:" + filepath.Join(outDir, "console.log"),
	}
	if kvm {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg,thread=multi", "-cpu", "max")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	qlog, err := os.Create(filepath.Join(outDir, "qemu.log"))
	if err != nil {
		return err
	}
	defer qlog.Close()
	cmd.Stdout, cmd.Stderr = qlog, qlog
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	go followConsole(ctx, filepath.Join(outDir, "console.log"), t0)
	werr := <-done
	logf("guest off after %v", time.Since(t0).Round(time.Second))
	if ctx.Err() != nil {
		return fmt.Errorf("guest did not finish in %v (console: %s)", timeout, filepath.Join(outDir, "console.log"))
	}
	if s, err := os.ReadFile(filepath.Join(res, "summary.txt")); err == nil {
		os.Stderr.Write(s)
	}
	b, err := os.ReadFile(filepath.Join(res, "exit-code"))
	if err != nil {
		return fmt.Errorf("the guest wrote no exit code (qemu: %v; console: %s)", werr, filepath.Join(outDir, "console.log"))
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("exit code %q: %w", b, err)
	}
	logf("tests exited with %d; logs in %s", code, res)
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// followConsole prints the boot milestones and the test summary lines
// from the console log as they arrive, so a slow TCG run shows progress.
func followConsole(ctx context.Context, path string, t0 time.Time) {
	var f *os.File
	for f == nil {
		f, _ = os.Open(path)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var partial string
	for {
		line, err := r.ReadString('\n')
		partial += line
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		l := strings.TrimSpace(partial)
		partial = ""
		for _, m := range []string{"Linux version", "vmtest-run", "reboot:"} {
			if strings.Contains(l, m) {
				if i := strings.Index(l, "Linux version"); i >= 0 {
					l = l[i:] // after the firmware's escape sequences
				}
				logf("[+%v] %s", time.Since(t0).Round(time.Second), l)
				break
			}
		}
	}
}
