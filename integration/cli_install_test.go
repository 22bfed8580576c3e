package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeTarget runs make in the repository with the test's binaries as
// the ones to install.
func makeTarget(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	full := append([]string{"-s", "-C", "..", "BINSRC=" + filepath.Dir(runcletBin)}, args...)
	out, err := exec.Command("make", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestCLIMakeInstall: make install into a DESTDIR lays out a node
// install (binaries, systemd units with KillMode=process, a default
// config, man pages, completions), keeps an operator's config, and make
// uninstall takes it all away again except an edited config.
func TestCLIMakeInstall(t *testing.T) {
	dest := t.TempDir()
	makeTarget(t, "install-files", "DESTDIR="+dest)
	want := []string{
		"usr/local/bin/runclet", "usr/local/bin/stage1-runc", "usr/local/bin/runclet-init",
		"usr/local/lib/systemd/system/runclet.service", "usr/local/lib/systemd/system/runclet-gc.service", "usr/local/lib/systemd/system/runclet-gc.timer",
		"etc/runclet/runclet.toml",
		"usr/local/share/man/man1/runclet.1", "usr/local/share/man/man1/runclet-run.1", "usr/local/share/man/man1/runclet-exec.1", "usr/local/share/man/man1/runclet-image-pull.1",
		"usr/local/share/bash-completion/completions/runclet", "usr/local/share/zsh/site-functions/_runclet", "usr/local/share/fish/vendor_completions.d/runclet.fish",
	}
	for _, f := range want {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
	read := func(f string) string {
		b, _ := os.ReadFile(filepath.Join(dest, f))
		return string(b)
	}
	unit := read("usr/local/lib/systemd/system/runclet.service")
	if !strings.Contains(unit, "\nKillMode=process\n") || !strings.Contains(unit, "\nExecStart=/usr/local/bin/runclet daemon\n") || !strings.Contains(unit, "\nDelegate=yes\n") {
		t.Errorf("runclet.service:\n%s", unit)
	}
	if gc := read("usr/local/lib/systemd/system/runclet-gc.service"); !strings.Contains(gc, "ExecStart=/usr/local/bin/runclet gc") {
		t.Errorf("runclet-gc.service:\n%s", gc)
	}
	def, _ := exec.Command(runcletBin, "config", "default").Output()
	if read("etc/runclet/runclet.toml") != string(def) {
		t.Error("the installed config is not the default one")
	}
	if man := read("usr/local/share/man/man1/runclet-exec.1"); !strings.Contains(man, ".SH NAME") || !strings.Contains(man, "runclet-exec - Run a command") {
		t.Errorf("man page:\n%.300s", man)
	}
	if st, err := os.Stat(filepath.Join(dest, "usr/local/bin/runclet")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("binary mode: %v %v", st, err)
	}

	// An operator's config survives a reinstall and an uninstall.
	conf := filepath.Join(dest, "etc/runclet/runclet.toml")
	os.WriteFile(conf, []byte("[cgroup]\ndriver = \"systemd\"\n"), 0o644)
	makeTarget(t, "install-files", "DESTDIR="+dest)
	if read("etc/runclet/runclet.toml") != "[cgroup]\ndriver = \"systemd\"\n" {
		t.Error("install overwrote an existing config")
	}
	if out := makeTarget(t, "uninstall", "DESTDIR="+dest); !strings.Contains(out, "keeping "+conf) {
		t.Errorf("uninstall did not say it keeps the edited config: %q", out)
	}
	var left []string
	filepath.Walk(dest, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			left = append(left, strings.TrimPrefix(p, dest+"/"))
		}
		return nil
	})
	if strings.Join(left, ",") != "etc/runclet/runclet.toml" {
		t.Errorf("left after uninstall: %v", left)
	}
	// With the default config, uninstall leaves nothing.
	os.Remove(conf)
	makeTarget(t, "install-files", "DESTDIR="+dest)
	makeTarget(t, "uninstall", "DESTDIR="+dest)
	left = nil
	filepath.Walk(dest, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Errorf("left after uninstall: %v", left)
	}
}

// TestCLIUnitFilesVerify: systemd accepts the installed units (installed
// under a PREFIX in a temporary directory so their ExecStart exists).
func TestCLIUnitFilesVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt package systemd)")
	}
	prefix := t.TempDir()
	makeTarget(t, "install-files", "PREFIX="+prefix+"/usr", "SYSCONFDIR="+prefix+"/etc")
	units := filepath.Join(prefix, "usr/lib/systemd/system")
	cmd := exec.Command(analyze, "verify", "--man=no", filepath.Join(units, "runclet.service"), filepath.Join(units, "runclet-gc.service"), filepath.Join(units, "runclet-gc.timer"))
	out, err := cmd.CombinedOutput()
	// verify only warns (exit 0) about unknown settings: any output fails.
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
