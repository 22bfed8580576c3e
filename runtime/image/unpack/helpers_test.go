package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tent is one entry of a test tarball. Zero fields get sensible defaults.
type tent struct {
	name         string
	typ          byte
	body         string
	mode         int64
	uid, gid     int
	link         string
	mtime, atime time.Time
	xattrs       map[string]string
	major, minor int64
}

var defaultMtime = time.Unix(1_600_000_000, 0)

func file(name, body string) tent       { return tent{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) tent              { return tent{name: name, typ: tar.TypeDir} }
func symlink(name, target string) tent  { return tent{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) tent { return tent{name: name, typ: tar.TypeLink, link: target} }

func (e tent) header() *tar.Header {
	h := &tar.Header{
		Name:       e.name,
		Typeflag:   e.typ,
		Mode:       e.mode,
		Uid:        e.uid,
		Gid:        e.gid,
		Linkname:   e.link,
		ModTime:    e.mtime,
		AccessTime: e.atime,
		Size:       int64(len(e.body)),
		Devmajor:   e.major,
		Devminor:   e.minor,
		Format:     tar.FormatPAX, // keeps nanoseconds, atime and xattrs
	}
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if h.Mode == 0 {
		h.Mode = 0o644
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
	}
	if h.ModTime.IsZero() {
		h.ModTime = defaultMtime
	}
	for k, v := range e.xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
	return h
}

// buildTar writes entries as an uncompressed tarball, ending with the two
// zero blocks tar.Writer.Close adds.
func buildTar(tb testing.TB, entries ...tent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(e.header()); err != nil {
			tb.Fatalf("tar header %q: %v", e.name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			tb.Fatalf("tar body %q: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func newLayerDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "layer")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func applyBytes(dir string, data []byte, opts Options) error {
	_, err := Apply(context.Background(), dir, bytes.NewReader(data), opts)
	return err
}

// testOpts lets tests that do not check ownership run unprivileged too.
func testOpts() Options { return Options{NoChown: os.Geteuid() != 0} }

func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

func lgetxattr(t *testing.T, path, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		t.Fatalf("lgetxattr %s %s: %v", path, name, err)
	}
	return string(buf[:n])
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// snapshot describes every file under root except the skip subtree:
// type, mode, owner, size, link count, mtime, content hash, symlink target
// and xattrs. Two equal snapshots mean nothing was written, created,
// removed, linked or chmod'ed.
func snapshot(t *testing.T, root, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		st := lstat(t, p)
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d size=%d nlink=%d mtime=%d.%09d rdev=%d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec, st.Rdev)
		switch {
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " sha256=" + hex.EncodeToString(sum[:])
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		desc += " xattrs=" + xattrList(t, p)
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return out
}

func xattrList(t *testing.T, p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return ""
		}
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 256)
		m, _ := unix.Lgetxattr(p, name, v)
		names = append(names, name+"="+string(v[:max(m, 0)]))
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func diffSnapshots(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("outside the layer: %s was removed", p)
		} else if a != b {
			t.Errorf("outside the layer: %s changed:\n  before %s\n  after  %s", p, b, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("outside the layer: %s was created", p)
		}
	}
}
