package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
)

func TestApplyNormalLayer(t *testing.T) {
	testutil.RequiresRoot(t, "chown, mknod and trusted.* xattrs")
	layer := newLayerDir(t)
	tEtc := time.Unix(1_700_000_000, 123_456_789)
	tHosts := time.Unix(1_700_000_100, 987_654_321)
	tHostsA := time.Unix(1_700_000_200, 5)
	tLink := time.Unix(1_650_000_000, 42)
	tHome := time.Unix(1_500_000_000, 1)
	data := buildTar(t,
		dir("./"),
		tent{name: "etc/", typ: tar.TypeDir, mode: 0o755, mtime: tEtc},
		tent{name: "etc/hosts", body: "127.0.0.1 localhost\n", mode: 0o644, mtime: tHosts, atime: tHostsA},
		tent{name: "etc/localtime", typ: tar.TypeSymlink, link: "/usr/share/zoneinfo/UTC", uid: 7, gid: 8, mtime: tLink},
		tent{name: "usr/bin/su", body: "#!su", mode: 0o4755}, // parents implied
		tent{name: "usr/bin/wall", body: "#!wall", mode: 0o2755, gid: 5},
		hardlink("usr/bin/su-again", "usr/bin/su"),
		symlink("lib", "usr/lib"),
		tent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		tent{name: "home/user/", typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000, mtime: tHome},
		tent{name: "home/user/notes", body: "hi", mode: 0o600, uid: 1000, gid: 1000},
		tent{name: "run/initctl", typ: tar.TypeFifo, mode: 0o600},
		tent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		tent{name: "dev/loop0", typ: tar.TypeBlock, mode: 0o660, gid: 6, major: 7, minor: 0},
		tent{name: "x/attrs", body: "x", xattrs: map[string]string{"user.color": "blue", "trusted.runclet": "t"}},
		tent{name: "x/dir/", typ: tar.TypeDir, xattrs: map[string]string{"user.kind": "dir"}},
		tent{name: "/abs/name", body: "abs"},
		tent{name: "./dot/name", body: "dot"},
		tent{name: "empty", body: ""},
	)
	if err := applyBytes(layer, data, Options{}); err != nil {
		t.Fatal(err)
	}
	p := func(n string) string { return filepath.Join(layer, n) }
	// Before anything reads the file: relatime would move atime.
	if st := lstat(t, p("etc/hosts")); !time.Unix(st.Atim.Unix()).Equal(tHostsA) {
		t.Errorf("etc/hosts: atime %v, want %v", time.Unix(st.Atim.Unix()), tHostsA)
	}

	type want struct {
		kind     uint32
		perm     uint32
		uid, gid uint32
	}
	for name, w := range map[string]want{
		"etc":             {unix.S_IFDIR, 0o755, 0, 0},
		"etc/hosts":       {unix.S_IFREG, 0o644, 0, 0},
		"etc/localtime":   {unix.S_IFLNK, 0o777, 7, 8},
		"usr":             {unix.S_IFDIR, 0o755, 0, 0},
		"usr/bin":         {unix.S_IFDIR, 0o755, 0, 0},
		"usr/bin/su":      {unix.S_IFREG, 0o4755, 0, 0},
		"usr/bin/wall":    {unix.S_IFREG, 0o2755, 0, 5},
		"tmp":             {unix.S_IFDIR, 0o1777, 0, 0},
		"home/user":       {unix.S_IFDIR, 0o700, 1000, 1000},
		"home/user/notes": {unix.S_IFREG, 0o600, 1000, 1000},
		"run/initctl":     {unix.S_IFIFO, 0o600, 0, 0},
		"dev/null":        {unix.S_IFCHR, 0o666, 0, 0},
		"dev/loop0":       {unix.S_IFBLK, 0o660, 0, 6},
		"abs/name":        {unix.S_IFREG, 0o644, 0, 0},
		"dot/name":        {unix.S_IFREG, 0o644, 0, 0},
	} {
		st := lstat(t, p(name))
		if got := st.Mode & unix.S_IFMT; got != w.kind {
			t.Errorf("%s: type %o, want %o", name, got, w.kind)
		}
		if got := st.Mode & 0o7777; got != w.perm {
			t.Errorf("%s: mode %o, want %o", name, got, w.perm)
		}
		if st.Uid != w.uid || st.Gid != w.gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, w.uid, w.gid)
		}
	}

	if got := readFile(t, p("etc/hosts")); got != "127.0.0.1 localhost\n" {
		t.Errorf("etc/hosts = %q", got)
	}
	for link, target := range map[string]string{"etc/localtime": "/usr/share/zoneinfo/UTC", "lib": "usr/lib"} {
		if got, err := os.Readlink(p(link)); err != nil || got != target {
			t.Errorf("%s -> %q (%v), want %q", link, got, err, target)
		}
	}
	su, su2 := lstat(t, p("usr/bin/su")), lstat(t, p("usr/bin/su-again"))
	if su.Ino != su2.Ino || su.Nlink != 2 {
		t.Errorf("hardlink: inodes %d and %d, nlink %d; want one inode with 2 links", su.Ino, su2.Ino, su.Nlink)
	}
	if st := lstat(t, p("dev/null")); st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("dev/null rdev %x", st.Rdev)
	}
	if st := lstat(t, p("dev/loop0")); st.Rdev != unix.Mkdev(7, 0) {
		t.Errorf("dev/loop0 rdev %x", st.Rdev)
	}
	if got := lgetxattr(t, p("x/attrs"), "user.color"); got != "blue" {
		t.Errorf("user.color = %q", got)
	}
	if got := lgetxattr(t, p("x/attrs"), "trusted.runclet"); got != "t" {
		t.Errorf("trusted.runclet = %q", got)
	}
	if got := lgetxattr(t, p("x/dir"), "user.kind"); got != "dir" {
		t.Errorf("user.kind = %q", got)
	}

	// Times are exact to the nanosecond, and directory times survive the
	// creation of their children.
	for name, mt := range map[string]time.Time{
		"etc": tEtc, "etc/hosts": tHosts, "etc/localtime": tLink, "home/user": tHome, "usr/bin/su": defaultMtime,
	} {
		st := lstat(t, p(name))
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(mt) {
			t.Errorf("%s: mtime %v, want %v", name, got, mt)
		}
	}
}

func TestApplyWhiteouts(t *testing.T) {
	testutil.RequiresRoot(t, "mknod of whiteout devices and trusted.overlay.opaque")
	layer := newLayerDir(t)
	data := buildTar(t,
		dir("a/"),
		file("a/.wh..wh..opq", ""),
		file("a/g", "g"),
		file(".wh.b", ""),
		file("c/.wh.d", ""),        // parent not in the archive
		file("x/.wh..wh..opq", ""), // opaque dir not in the archive
		dir("x/"),                  // listed after its marker: keeps the xattr
		file("y", "replaced by a whiteout"),
		file(".wh.y", ""),
		file(".wh..wh.aufs", ""),        // AUFS metadata: skipped
		file(".wh..wh.plnk/12.34", "x"), // AUFS hardlink store: skipped
	)
	if err := applyBytes(layer, data, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"b", "c/d", "y"} {
		st := lstat(t, filepath.Join(layer, name))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0:0 character device", name, st.Mode, st.Rdev)
		}
	}
	for _, name := range []string{"a", "x"} {
		if got := lgetxattr(t, filepath.Join(layer, name), "trusted.overlay.opaque"); got != "y" {
			t.Errorf("%s: trusted.overlay.opaque = %q, want y", name, got)
		}
	}
	if got := readFile(t, filepath.Join(layer, "a/g")); got != "g" {
		t.Errorf("a/g = %q", got)
	}
	filepath.Walk(layer, func(p string, _ os.FileInfo, _ error) error {
		if strings.HasPrefix(filepath.Base(p), ".wh.") {
			t.Errorf("whiteout entry written as a file: %s", p)
		}
		return nil
	})
}

// TestOverlayMount checks the point of the whiteout conversion: the kernel
// reads our layers as overlay lowers and merges them as the image intends.
func TestOverlayMount(t *testing.T) {
	testutil.RequiresRoot(t, "mounting overlayfs")
	lower, upper := newLayerDir(t), newLayerDir(t)
	if err := applyBytes(lower, buildTar(t, dir("a/"), file("a/f", "f"), file("b", "b")), Options{}); err != nil {
		t.Fatal(err)
	}
	upperTar := buildTar(t, file(".wh.b", ""), dir("a/"), file("a/.wh..wh..opq", ""), file("a/g", "g"))
	if err := applyBytes(upper, upperTar, Options{}); err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(t.TempDir(), "merged")
	if err := os.Mkdir(merged, 0o755); err != nil {
		t.Fatal(err)
	}
	// Read-only with only lowers: no upperdir or workdir needed.
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+upper+":"+lower); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount %s: %v", merged, err)
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	})
	if got := dirNames(t, merged); !equal(got, []string{"a"}) {
		t.Errorf("merged root = %v, want [a] (b whited out)", got)
	}
	if got := dirNames(t, filepath.Join(merged, "a")); !equal(got, []string{"g"}) {
		t.Errorf("merged a/ = %v, want [g] (a is opaque)", got)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func equal(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

// TestApplyReplaces covers tar streams that repeat a name: the later entry
// wins, and replacing never writes through what was there.
func TestApplyReplaces(t *testing.T) {
	layer := newLayerDir(t)
	data := buildTar(t,
		file("f", "old"), file("f", "new"),
		dir("d/"), file("d/child", "c"), file("d", "now a file"),
		file("e", "file first"), dir("e/"),
		tent{name: "m/", typ: tar.TypeDir, mode: 0o755}, file("m/keep", "k"), tent{name: "m/", typ: tar.TypeDir, mode: 0o700},
		file("orig", "orig"), hardlink("twin", "orig"), file("twin", "separate"),
		symlink("s", "m"), dir("s/"), file("s/inside", "i"),
	)
	if err := applyBytes(layer, data, testOpts()); err != nil {
		t.Fatal(err)
	}
	p := func(n string) string { return filepath.Join(layer, n) }
	for name, want := range map[string]string{
		"f": "new", "d": "now a file", "m/keep": "k", "orig": "orig", "twin": "separate", "s/inside": "i",
	} {
		if got := readFile(t, p(name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if st := lstat(t, p("e")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("e: mode %o, want a directory", st.Mode)
	}
	if st := lstat(t, p("m")); st.Mode&0o7777 != 0o700 {
		t.Errorf("m: mode %o, want 0700 from the second entry", st.Mode&0o7777)
	}
	if st := lstat(t, p("s")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("s: mode %o, want a directory replacing the symlink", st.Mode)
	}
	if _, err := os.Lstat(p("m/inside")); err == nil {
		t.Errorf("s/inside was written through the replaced symlink into m/")
	}
}

func TestApplyImpliedParents(t *testing.T) {
	layer := newLayerDir(t)
	if err := applyBytes(layer, buildTar(t, file("a/b/c/f", "f")), testOpts()); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		st := lstat(t, filepath.Join(layer, d))
		if st.Mode != unix.S_IFDIR|0o755 || st.Uid != uint32(os.Geteuid()) {
			t.Errorf("%s: mode %o uid %d, want a 0755 directory owned by %d", d, st.Mode, st.Uid, os.Geteuid())
		}
	}
}

func TestApplyHardlinkTargetMissing(t *testing.T) {
	for _, data := range [][]byte{
		buildTar(t, hardlink("x", "nope")),
		buildTar(t, hardlink("x", "no/such/dir")),
		buildTar(t, hardlink("x", "/etc/passwd")), // absolute: relative to the layer, not the host
	} {
		err := applyBytes(newLayerDir(t), data, testOpts())
		if err == nil || !errdefs.IsInvalidArgument(err) {
			t.Fatalf("err = %v, want an invalid-argument error", err)
		}
		if !strings.Contains(err.Error(), `"x"`) || !strings.Contains(err.Error(), "does not exist in this layer") {
			t.Errorf("error %q does not name the entry and its missing target", err)
		}
	}
}

func TestApplyRefusesOverlayXattrs(t *testing.T) {
	layer := newLayerDir(t)
	data := buildTar(t, tent{name: "d/", typ: tar.TypeDir, xattrs: map[string]string{"trusted.overlay.redirect": "/etc"}})
	err := applyBytes(layer, data, testOpts())
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "trusted.overlay.redirect") {
		t.Fatalf("err = %v, want a refusal naming the xattr", err)
	}
}

func TestApplyNeedsEmptyDir(t *testing.T) {
	layer := newLayerDir(t)
	if err := os.WriteFile(filepath.Join(layer, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := applyBytes(layer, buildTar(t, file("f", "f")), testOpts())
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("err = %v, want failed precondition", err)
	}
}

// TestApplyConsumesWholeStream: the caller verifies the layer digest from
// the bytes Apply read, so Apply must read past the end-of-archive marker.
func TestApplyConsumesWholeStream(t *testing.T) {
	data := buildTar(t, dir("d/"), file("d/f", strings.Repeat("x", 1000)))
	if !bytes.HasSuffix(data, make([]byte, 1024)) {
		t.Fatal("tar.Writer did not end with two zero blocks")
	}
	for name, blob := range map[string][]byte{
		"marker only":       data,
		"10KiB of padding":  append(bytes.Clone(data), make([]byte, 10<<10)...),
		"5MiB beyond a buf": append(bytes.Clone(data), make([]byte, 5<<20)...),
	} {
		for _, half := range []bool{false, true} {
			var r io.Reader = bytes.NewReader(blob)
			if half {
				r = iotest.HalfReader(r) // short reads everywhere
			}
			dg := digest.Canonical.Digester()
			n, err := Apply(context.Background(), newLayerDir(t), io.TeeReader(r, dg.Hash()), testOpts())
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if n != int64(len(blob)) {
				t.Errorf("%s: consumed %d bytes, want %d", name, n, len(blob))
			}
			if got, want := dg.Digest(), digest.FromBytes(blob); got != want {
				t.Errorf("%s: digest of the bytes read %s, want %s", name, got, want)
			}
		}
	}
}

func TestApplyContextCancel(t *testing.T) {
	var entries []tent
	for i := range 200 {
		entries = append(entries, file("f"+string(rune('a'+i%26))+strings.Repeat("x", i/26), strings.Repeat("y", 1000)))
	}
	data := buildTar(t, entries...)

	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		layer := newLayerDir(t)
		_, err := Apply(ctx, layer, bytes.NewReader(data), testOpts())
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := len(dirNames(t, layer)); n != 0 {
			t.Errorf("%d entries extracted after cancellation", n)
		}
	})
	t.Run("midway", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		layer := newLayerDir(t)
		r := &cancelAfter{r: bytes.NewReader(data), left: 20 << 10, cancel: cancel}
		_, err := Apply(ctx, layer, r, testOpts())
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := len(dirNames(t, layer)); n == 0 || n >= len(entries) {
			t.Errorf("%d of %d entries extracted; want the extraction stopped midway", n, len(entries))
		}
	})
}

// cancelAfter cancels its context once left bytes have been read.
type cancelAfter struct {
	r      io.Reader
	left   int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.left -= n; c.left <= 0 {
		c.cancel()
	}
	return n, err
}

func TestEscapeErrorMessage(t *testing.T) {
	err := error(&EscapeError{Entry: "../../etc/passwd", Reason: "path traversal"})
	if got, want := err.Error(), `layer entry "../../etc/passwd" escapes the layer root: path traversal`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Error("EscapeError is not of class ErrInvalidArgument")
	}
}

func TestApplyNoChown(t *testing.T) {
	layer := newLayerDir(t)
	data := buildTar(t, tent{name: "d/", typ: tar.TypeDir, uid: 1000, gid: 1000}, tent{name: "d/f", body: "f", uid: 1000, gid: 1000})
	if err := applyBytes(layer, data, Options{NoChown: true}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"d", "d/f"} {
		if st := lstat(t, filepath.Join(layer, name)); st.Uid != uint32(os.Geteuid()) {
			t.Errorf("%s: owner %d, want the caller (%d) with NoChown", name, st.Uid, os.Geteuid())
		}
	}
}
