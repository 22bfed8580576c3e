package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLICp: cp copies files and directories out of and into a running
// app, symlinks as symlinks, in the app's own view (a volume included);
// a symlink the app plants cannot make cp read or write the host's files.
func TestCLICp(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	vol := t.TempDir()
	os.WriteFile(filepath.Join(vol, "in-volume"), []byte("volume file\n"), 0o644)
	hostDir := t.TempDir()
	os.Chmod(hostDir, 0o755)
	secret := filepath.Join(hostDir, "host-secret")
	os.WriteFile(secret, []byte("host only\n"), 0o600)
	pi.run("run", "-d", "--name", "cpy", "--app-name", "box", "-v", vol+":/vol", img, "--", "sh", "-c",
		"mkdir -p /data/sub && echo one > /data/a && echo two > /data/sub/b && chmod 640 /data/a && ln -s a /data/link && "+
			"ln -s "+hostDir+" /escape && ln -s / /data/up && echo container > /host-secret && sleep 300")
	pi.waitExec("cpy", "test", "-L", "/data/up")

	out := t.TempDir()
	// A file, by POD:PATH and POD:APP:PATH, into an existing directory.
	pi.run("cp", "cpy:/data/a", out)
	if b, _ := os.ReadFile(filepath.Join(out, "a")); string(b) != "one\n" {
		t.Errorf("cp out file: %q", b)
	}
	if st, _ := os.Stat(filepath.Join(out, "a")); st == nil || st.Mode().Perm() != 0o640 {
		t.Errorf("cp out kept no mode: %v", st)
	}
	pi.run("cp", "cpy:box:/vol/in-volume", filepath.Join(out, "v"))
	if b, _ := os.ReadFile(filepath.Join(out, "v")); string(b) != "volume file\n" {
		t.Errorf("cp out of a volume: %q", b)
	}
	// A directory, its symlinks kept as symlinks.
	pi.run("cp", "cpy:/data", filepath.Join(out, "data"))
	if b, _ := os.ReadFile(filepath.Join(out, "data", "sub", "b")); string(b) != "two\n" {
		t.Errorf("cp out dir: %q", b)
	}
	if l, err := os.Readlink(filepath.Join(out, "data", "up")); err != nil || l != "/" {
		t.Errorf("symlink in a copied dir: %q %v", l, err)
	}
	// The app's symlink to a host path resolves in the app's root: the
	// host's secret is not what comes out.
	_, _, err := pi.try("cp", "cpy:/escape/host-secret", filepath.Join(out, "stolen"))
	if b, _ := os.ReadFile(filepath.Join(out, "stolen")); strings.Contains(string(b), "host only") {
		t.Fatalf("cp followed the app's symlink to the host: %q", b)
	}
	if err == nil {
		t.Errorf("cp through a symlink to a path the app does not have succeeded")
	}
	pi.run("cp", "cpy:/data/up/host-secret", filepath.Join(out, "via-up"))
	if b, _ := os.ReadFile(filepath.Join(out, "via-up")); string(b) != "container\n" {
		t.Errorf("cp through /data/up -> /: %q, want the app's file", b)
	}

	// Into the app: a file and a directory.
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.WriteFile(filepath.Join(src, "d", "f"), []byte("from host\n"), 0o644)
	os.Symlink("d/f", filepath.Join(src, "l"))
	pi.run("cp", src, "cpy:/data")
	if got := pi.run("exec", "cpy", "sh", "-c", "cat /data/tree/d/f; readlink /data/tree/l"); got != "from host\nd/f\n" {
		t.Errorf("cp in: %q", got)
	}
	// Writing through the app's symlink to a host directory stays in the app.
	one := filepath.Join(t.TempDir(), "one")
	os.WriteFile(one, []byte("planted\n"), 0o644)
	pi.try("cp", one, "cpy:/escape/planted")
	if _, err := os.Stat(filepath.Join(hostDir, "planted")); err == nil {
		t.Fatal("cp into the app wrote into the host directory its symlink names")
	}
	if _, stderr, err := pi.try("cp", "cpy:/nope", out); exitCodeOf(t, err) != 125 || !strings.Contains(stderr, "/nope") {
		t.Errorf("cp of a missing path: %v %q", err, stderr)
	}
}

// waitExec runs a command in a pod until it succeeds (10 s at most).
func (pi *podInstance) waitExec(podRef string, cmd ...string) {
	pi.t.Helper()
	for i := 0; i < 100; i++ {
		if _, _, err := pi.try(append([]string{"exec", podRef}, cmd...)...); err == nil {
			return
		}
		sleepMs(100)
	}
	pi.t.Fatalf("exec %v in %s never succeeded", cmd, podRef)
}

func sleepMs(n int) { time.Sleep(time.Duration(n) * time.Millisecond) }
