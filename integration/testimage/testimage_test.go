package testimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// digester is what images, indexes and layers have in common here.
type digester interface{ Digest() (v1.Hash, error) }

// entry is a tar header plus contents, as read back from a layer.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// readTar reads a whole uncompressed tar stream.
func readTar(t *testing.T, rc io.ReadCloser) map[string]entry {
	t.Helper()
	defer rc.Close()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading tar entry %s: %v", hdr.Name, err)
		}
		out[hdr.Name] = entry{hdr, data}
	}
}

func layerFiles(t *testing.T, img v1.Image, i int) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if i >= len(layers) {
		t.Fatalf("image has %d layers, want at least %d", len(layers), i+1)
	}
	rc, err := layers[i].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	return readTar(t, rc)
}

func digest(t *testing.T, d digester) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func configFile(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// TestDeterministic builds every image twice, the second time with the
// in-process layer cache cleared, and expects identical digests.
func TestDeterministic(t *testing.T) {
	builders := map[string]func() (digester, error){
		"busybox":    func() (digester, error) { return Busybox() },
		"multilayer": func() (digester, error) { return MultiLayer() },
		"whiteouts":  func() (digester, error) { return Whiteouts() },
		"tools":      func() (digester, error) { return Tools() },
		"index":      func() (digester, error) { return Index() },
		"random":     func() (digester, error) { return Random(2, 100_000) },
		"withuser": func() (digester, error) {
			img, err := Busybox()
			if err != nil {
				return nil, err
			}
			return WithUser(img, "default-user")
		},
	}
	for n, build := range builders {
		t.Run(n, func(t *testing.T) {
			a, err := build()
			if err != nil {
				t.Fatal(err)
			}
			resetCache()
			b, err := build()
			if err != nil {
				t.Fatal(err)
			}
			if da, db := digest(t, a), digest(t, b); da != db {
				t.Errorf("two builds differ: %s vs %s", da, db)
			}
		})
	}
}

func TestBusybox(t *testing.T) {
	img := MustBusybox(t)
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("media type %s, want OCI manifest", mt)
	}
	cf := configFile(t, img)
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if !cf.Created.Time.Equal(Epoch) {
		t.Errorf("Created %v, want %v", cf.Created, Epoch)
	}
	if strings.Join(cf.Config.Cmd, " ") != "sh" || len(cf.Config.Env) != 1 || cf.Config.Env[0] != DefaultPath {
		t.Errorf("Cmd %q Env %q", cf.Config.Cmd, cf.Config.Env)
	}
	if n := len(cf.RootFS.DiffIDs); n != 1 {
		t.Fatalf("%d layers, want 1", n)
	}

	files := layerFiles(t, img, 0)
	host, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	bb, ok := files["bin/busybox"]
	if !ok || bb.hdr.Typeflag != tar.TypeReg || bb.hdr.Mode != 0o755 || !bytes.Equal(bb.data, host) {
		t.Errorf("bin/busybox missing, not a 0755 regular file, or not the host's binary")
	}
	sh, ok := files["bin/sh"]
	if !ok || sh.hdr.Typeflag != tar.TypeSymlink || sh.hdr.Linkname != "busybox" {
		t.Errorf("bin/sh is not a symlink to busybox: %+v", sh.hdr)
	}
	if e := files["tmp/"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeDir || e.hdr.Mode != 0o1777 {
		t.Errorf("tmp/ is not a 1777 directory")
	}
	for _, d := range []string{"root/", "home/", "var/", "proc/", "sys/", "dev/", "etc/", "bin/"} {
		if e := files[d]; e.hdr == nil || e.hdr.Typeflag != tar.TypeDir {
			t.Errorf("%s is not a directory", d)
		}
	}
	if !strings.Contains(string(files["etc/passwd"].data), "\ndefault-user:x:1000:50000:") ||
		!strings.Contains(string(files["etc/passwd"].data), "\nnobody:x:65534:65534:") {
		t.Errorf("etc/passwd:\n%s", files["etc/passwd"].data)
	}
	if !strings.Contains(string(files["etc/group"].data), "\ngroup-50000:x:50000:") {
		t.Errorf("etc/group:\n%s", files["etc/group"].data)
	}

	applets, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" {
			continue
		}
		if e, ok := files["bin/"+a]; !ok || e.hdr.Linkname != "busybox" {
			t.Errorf("applet %s has no /bin symlink", a)
		}
	}
	for n, e := range files {
		if !e.hdr.ModTime.Equal(Epoch) {
			t.Errorf("%s has mtime %v", n, e.hdr.ModTime)
		}
		if e.hdr.Typeflag == tar.TypeSymlink && !strings.HasPrefix(n, "bin/") {
			t.Errorf("symlink outside /bin: %s", n)
		}
	}
}

func TestWithUser(t *testing.T) {
	base := MustBusybox(t)
	img := MustWithUser(t, base, "1000:50000")
	if u := configFile(t, img).Config.User; u != "1000:50000" {
		t.Errorf("User %q", u)
	}
	if configFile(t, base).Config.User != "" {
		t.Errorf("WithUser changed its base image")
	}
}

func TestMultiLayer(t *testing.T) {
	img := MustMultiLayer(t)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers, want 3", len(layers))
	}
	c := configFile(t, img).Config
	if c.WorkingDir != "/data" || c.StopSignal != "SIGQUIT" || c.Labels[LabelTest] != "multilayer" ||
		len(c.Entrypoint) == 0 || len(c.ExposedPorts) != 2 || len(c.Volumes) != 1 {
		t.Errorf("config %+v", c)
	}
	if n := len(configFile(t, img).History); n != 3 {
		t.Errorf("%d history entries, want 3", n)
	}
	l2 := layerFiles(t, img, 1)
	if e := l2["data/hardlink-to-a.txt"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != "data/a.txt" {
		t.Errorf("hardlink entry wrong")
	}
	if e := l2["data/link-to-b"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "dir/b.txt" {
		t.Errorf("symlink entry wrong")
	}
	if e := l2["data/owned.txt"]; e.hdr == nil || e.hdr.Uid != DefaultUserUID || e.hdr.Gid != DefaultUserGID {
		t.Errorf("owned.txt ownership wrong")
	}
	if string(l2["data/dir/b.txt"].data) != "file b\n" {
		t.Errorf("b.txt wrong")
	}
	if string(layerFiles(t, img, 2)["data/c.txt"].data) != "file c\n" {
		t.Errorf("c.txt wrong")
	}
}

func TestWhiteouts(t *testing.T) {
	img := MustWhiteouts(t)
	top := layerFiles(t, img, 2)
	for _, n := range []string{"w/.wh.gone", "w/opaque/.wh..wh..opq", "w/opaque/new"} {
		if _, ok := top[n]; !ok {
			t.Errorf("top layer lacks %s", n)
		}
	}
	// ggcr's flattening applies whiteouts; use it as a reference unpacker.
	flat := readTar(t, mutate.Extract(img))
	for _, n := range []string{"w/keep", "w/opaque/new"} {
		if _, ok := flat[n]; !ok {
			t.Errorf("flattened image lacks %s", n)
		}
	}
	for _, n := range []string{"w/gone", "w/opaque/old", "w/.wh.gone", "w/opaque/.wh..wh..opq"} {
		if _, ok := flat[n]; ok {
			t.Errorf("flattened image still has %s", n)
		}
	}
}

func TestIndex(t *testing.T) {
	idx := MustIndex(t)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index %s with %d manifests", im.MediaType, len(im.Manifests))
	}
	for i, arch := range []string{runtime.GOARCH, ForeignArch()} {
		desc := im.Manifests[i]
		if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != arch {
			t.Errorf("manifest %d platform %+v, want linux/%s", i, desc.Platform, arch)
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if cf := configFile(t, img); cf.Architecture != arch {
			t.Errorf("manifest %d config architecture %s, want %s", i, cf.Architecture, arch)
		}
		flat := readTar(t, mutate.Extract(img))
		if got := string(flat["platform"].data); got != "linux/"+arch {
			t.Errorf("manifest %d /platform = %q", i, got)
		}
		if _, ok := flat["bin/busybox"]; ok != (i == 0) {
			t.Errorf("manifest %d: has busybox = %v", i, ok)
		}
	}
}

func TestRandom(t *testing.T) {
	const size = 300_000
	img, err := Random(3, size)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers", len(layers))
	}
	seen := map[v1.Hash]bool{}
	for i, l := range layers {
		sz, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		if sz < size || sz > size+size/50+4096 {
			t.Errorf("layer %d compressed size %d, want about %d", i, sz, size)
		}
		d := digest(t, l)
		if seen[d] {
			t.Errorf("layer %d repeats an earlier layer", i)
		}
		seen[d] = true
		// Reading the layer again must reproduce the digest it claims.
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil || h != d {
			t.Errorf("layer %d re-read digest %s, want %s (%v)", i, h, d, err)
		}
	}
	if _, err := Random(0, 1); err == nil {
		t.Error("Random(0, 1) did not fail")
	}
}

const helloSource = `package main

import (
	"fmt"
	"os"
)

func main() { fmt.Println("hello", os.Args[1:]) }
`

func TestGoProgram(t *testing.T) {
	bin, err := GoBinary("hello", helloSource)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "a", "b").CombinedOutput()
	if err != nil || string(out) != "hello [a b]\n" {
		t.Fatalf("running hello: %v: %q", err, out)
	}

	l, err := GoProgram("hello", helloSource)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	files := readTar(t, rc)
	e, ok := files["usr/local/bin/hello"]
	want, _ := os.ReadFile(bin)
	if !ok || e.hdr.Mode != 0o755 || !bytes.Equal(e.data, want) {
		t.Errorf("layer lacks the 0755 binary at usr/local/bin/hello")
	}
	if _, ok := files["usr/local/bin/"]; !ok {
		t.Errorf("layer lacks usr/local/bin/")
	}

	if _, err := GoProgram("../x", helloSource); err == nil {
		t.Error("GoProgram accepted a name with a slash")
	}
	if _, err := GoBinary("broken", "package main\nfunc main() { undefined() }\n"); err == nil ||
		!strings.Contains(err.Error(), "undefined") {
		t.Errorf("compile error not reported with compiler output: %v", err)
	}
}

// TestSleepy runs sleepy on the host: it prints its args and ids, survives
// SIGTERM and dies from SIGKILL.
func TestSleepy(t *testing.T) {
	bin, err := GoBinary("sleepy", SleepySource)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "x", "y z")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	readLine := func() string {
		t.Helper()
		done := make(chan bool, 1)
		go func() { done <- lines.Scan() }()
		select {
		case <-done:
			return lines.Text()
		case <-time.After(10 * time.Second):
			t.Fatal("sleepy printed nothing within 10s")
			return ""
		}
	}
	want := `sleepy: args=["x" "y z"] uid=` + strconv.Itoa(os.Getuid()) + " gid=" + strconv.Itoa(os.Getgid())
	if got := readLine(); got != want {
		t.Fatalf("first line %q, want %q", got, want)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := readLine(); got != "sleepy: ignoring terminated" {
		t.Fatalf("after SIGTERM got %q", got)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("sleepy ended with %v, want killed by SIGKILL", err)
	}
}
