package testimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DynamicBusyboxPath, if not empty, is the dynamically linked busybox that
// DynamicBusybox puts in its image. If empty, DynamicBusybox downloads
// Debian's "busybox" package with apt-get (once; the binary is cached under
// os.UserCacheDir()/runclet-testimage) and takes /bin/busybox from it.
var DynamicBusyboxPath = ""

// BusyboxPasswd and BusyboxGroup are the /etc/passwd and /etc/group of
// DynamicBusybox: the accounts of the busybox images on Docker Hub (no one
// is in a supplementary group). Images that add users extend them.
const (
	BusyboxPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	BusyboxGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
users:x:100:
nogroup:x:65534:
`
	nsswitch = `passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
`
)

// DynamicBusybox returns a two-layer linux/GOARCH image that behaves like the
// busybox images the Kubernetes e2e tests use, built from Debian's
// dynamically linked busybox rather than busybox-static. The difference
// matters: Debian's static build prefers its applets to programs on disk
// (FEATURE_PREFER_APPLETS, FEATURE_SH_STANDALONE), so "sh -c ls" never
// executes /bin/ls, while this one runs what PATH finds, like upstream
// busybox images.
//
// The first layer holds /bin/busybox and, as hard links to it (so that
// masking one of them, which bind-mounts over the path, masks only that
// name), /bin/<applet> for every applet of "busybox --list"; the C
// libraries it needs, copied from the host at the paths ldd reports (for
// amd64: /lib/x86_64-linux-gnu/libc.so.6, libresolv.so.2 and
// /lib64/ld-linux-x86-64.so.2); /etc/passwd and /etc/group with the usual
// busybox accounts (root, daemon, bin, sys, sync, mail, www-data (33),
// operator, nobody (65534); groups up to users (100) and nogroup (65534));
// /etc/nsswitch.conf; /root (0700), /tmp (1777), /home, /usr/bin, /usr/sbin,
// /var/spool/mail, /var/www, /proc, /sys and /dev. The second layer adds
// /usr/bin/pgrep and /usr/bin/ipcs (ProcToolsSource), which Debian's busybox
// lacks. Config: Cmd ["sh"], Env PATH, label org.runclet.test=busybox-dynamic.
//
// Files have fixed mtimes, so the digest depends only on the busybox binary
// and the host's libraries.
func DynamicBusybox() (v1.Image, error) {
	bin, err := dynamicBusyboxBinary()
	if err != nil {
		return nil, err
	}
	root, err := cached("dynbusybox:"+bin, func() (v1.Layer, error) { return buildDynamicBusyboxLayer(bin) })
	if err != nil {
		return nil, err
	}
	tools, err := cached("proctools", buildProcToolsLayer)
	if err != nil {
		return nil, err
	}
	img, err := baseImage(runtime.GOARCH, v1.Config{
		Cmd:    []string{"sh"},
		Env:    []string{DefaultPath},
		Labels: map[string]string{LabelTest: "busybox-dynamic"},
	})
	if err != nil {
		return nil, err
	}
	if img, err = appendLayer(img, "Debian busybox (dynamic) rootfs", root); err != nil {
		return nil, err
	}
	return appendLayer(img, "go build pgrep, ipcs", tools)
}

// dynamicBusyboxBinary returns the path of a dynamically linked busybox:
// DynamicBusyboxPath, or the one from Debian's package, downloaded and
// cached on first use.
func dynamicBusyboxBinary() (string, error) {
	if DynamicBusyboxPath != "" {
		return DynamicBusyboxPath, nil
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "busybox-dynamic-"+runtime.GOARCH)
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		return out, nil
	}
	work, err := os.MkdirTemp(cache, ".busybox-deb-")
	if err != nil {
		return "", fmt.Errorf("creating download dir: %w", err)
	}
	defer os.RemoveAll(work)
	// apt-get would drop to user _apt, which cannot write to a private
	// temporary directory; it then warns and downloads as us anyway.
	dl := exec.Command("apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", "busybox")
	dl.Dir = work
	if output, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("downloading Debian's busybox package (apt-get download busybox): %w\n%s", err, output)
	}
	debs, _ := filepath.Glob(filepath.Join(work, "busybox_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download busybox: expected one busybox_*.deb in %s, found %d", work, len(debs))
	}
	x := filepath.Join(work, "root")
	if output, err := exec.Command("dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpacking %s: %w\n%s", filepath.Base(debs[0]), err, output)
	}
	data, err := os.ReadFile(filepath.Join(x, "bin", "busybox"))
	if err != nil {
		return "", fmt.Errorf("busybox package: %w", err)
	}
	tmp := filepath.Join(cache, fmt.Sprintf(".busybox-dynamic.%d.tmp", os.Getpid()))
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return "", fmt.Errorf("caching busybox: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("caching busybox: %w", err)
	}
	return out, nil
}

func buildDynamicBusyboxLayer(bin string) (v1.Layer, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w", err)
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets with %s --list: %w", bin, err)
	}
	names := []string{"bin/busybox"}
	seen := map[string]bool{"busybox": true}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "." || applet == ".." || strings.Contains(applet, "/") {
			return nil, fmt.Errorf("%s --list printed an unexpected applet name %q", bin, applet)
		}
		if !seen[applet] {
			seen[applet] = true
			names = append(names, "bin/"+applet)
		}
	}
	if !seen["sh"] {
		return nil, fmt.Errorf("%s has no sh applet", bin)
	}

	files := []file{
		dir("bin", 0o755),
		dir("dev", 0o755),
		dir("etc", 0o755),
		dir("home", 0o755),
		dir("proc", 0o555),
		dir("root", 0o700),
		dir("sys", 0o555),
		dir("tmp", 0o1777),
		dir("usr", 0o755),
		dir("usr/bin", 0o755),
		dir("usr/sbin", 0o755),
		dir("var", 0o755),
		dir("var/spool", 0o755),
		dir("var/spool/mail", 0o755),
		dir("var/www", 0o755),
		reg("etc/passwd", 0o644, BusyboxPasswd),
		reg("etc/group", 0o644, BusyboxGroup),
		reg("etc/nsswitch.conf", 0o644, nsswitch),
	}
	files = append(files, linkedFiles(names, 0o755, data)...)

	libs, err := sharedLibraries(bin)
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	for _, f := range files {
		if f.typ == tar.TypeDir {
			dirs[f.name] = true
		}
	}
	for _, lib := range libs {
		name := strings.TrimPrefix(path.Clean(lib), "/")
		fi, err := os.Stat(lib)
		if err != nil {
			return nil, fmt.Errorf("busybox needs %s: %w", lib, err)
		}
		b, err := os.ReadFile(lib) // follows symlinks: the image gets a plain file
		if err != nil {
			return nil, fmt.Errorf("busybox needs %s: %w", lib, err)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				files = append(files, dir(d, 0o755))
			}
		}
		files = append(files, file{name: name, typ: tar.TypeReg, mode: int64(fi.Mode().Perm()), data: b})
	}
	return layerFromFiles(files)
}

// linkedFiles returns one regular file holding data under the first of
// names in tar order and hard links to it under the others. The file must
// come first because a hard link in a tar stream refers to an earlier entry,
// and tarFiles sorts entries by name.
func linkedFiles(names []string, mode int64, data []byte) []file {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	files := []file{{name: sorted[0], typ: tar.TypeReg, mode: mode, data: data}}
	for _, n := range sorted[1:] {
		files = append(files, file{name: n, typ: tar.TypeLink, mode: mode, link: sorted[0]})
	}
	return files
}

// sharedLibraries returns the absolute paths, as the dynamic loader finds
// them on this host, of the program interpreter and every shared library
// bin needs (ldd resolves the dependencies of dependencies too). A static
// binary needs none.
func sharedLibraries(bin string) ([]string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", bin, err)
	}
	dynamic := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			dynamic = true
		}
	}
	f.Close()
	if !dynamic {
		return nil, nil
	}
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w\n%s", bin, err, out)
	}
	// Lines look like "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6
	// (0x...)", "\t/lib64/ld-linux-x86-64.so.2 (0x...)" or, for the vDSO,
	// "\tlinux-vdso.so.1 (0x...)".
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", bin, line)
		}
		p := strings.Fields(line)[0]
		if _, after, ok := strings.Cut(line, "=>"); ok {
			if fields := strings.Fields(after); len(fields) > 0 {
				p = fields[0]
			}
		}
		if strings.HasPrefix(p, "/") {
			libs = append(libs, p)
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s listed no libraries:\n%s", bin, out)
	}
	sort.Strings(libs)
	return libs, nil
}

// buildProcToolsLayer compiles ProcToolsSource and returns a layer with it
// as /usr/bin/ipcs and, hard-linked, /usr/bin/pgrep.
func buildProcToolsLayer() (v1.Layer, error) {
	bin, err := GoBinary("proctools", ProcToolsSource)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("reading compiled proctools: %w", err)
	}
	files := []file{dir("usr", 0o755), dir("usr/bin", 0o755)}
	files = append(files, linkedFiles([]string{"usr/bin/pgrep", "usr/bin/ipcs"}, 0o755, data)...)
	return layerFromFiles(files)
}
