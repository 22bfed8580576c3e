package unpack

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
)

// victims is the world outside the layer that hostile tarballs aim at.
// The layer sits four levels below base, so "../../../../" from the layer
// root lands in base, and every escape lands somewhere the snapshot sees.
type victims struct {
	base    string // snapshot root
	layer   string // base/l1/l2/l3/layer
	dir     string // base/victim, holding "sentinel"
	file    string // base/victimfile
	outside string // base/l1/l2/l3/outside: what "../outside" names from the layer
}

const sentinel = "DO NOT TOUCH"

func newVictims(t *testing.T) victims {
	t.Helper()
	base := t.TempDir()
	v := victims{
		base:    base,
		layer:   filepath.Join(base, "l1", "l2", "l3", "layer"),
		dir:     filepath.Join(base, "victim"),
		file:    filepath.Join(base, "victimfile"),
		outside: filepath.Join(base, "l1", "l2", "l3", "outside"),
	}
	for _, d := range []string{v.layer, v.dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(v.dir, "sentinel"), v.file, v.outside} {
		if err := os.WriteFile(f, []byte(sentinel), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// abs is p without its leading "/", for entry names that walk from an
// escaping symlink to "/" and on to the victim.
func abs(p string) string { return strings.TrimPrefix(p, "/") }

type hostileCase struct {
	name    string
	entries func(v victims) []tent
	// escape is the Entry an *EscapeError must name; "" means another
	// error class is expected (see wantErr) or, with ok, success.
	escape  string
	wantErr string // substring of a non-escape error
	ok      func(t *testing.T, v victims)
}

func hostileCases() []hostileCase {
	evilTo := func(target string) tent { return symlink("evil", target) }
	return []hostileCase{
		// Names that climb out.
		{name: "dotdot file", escape: "../escape",
			entries: func(v victims) []tent { return []tent{file("../escape", "x")} }},
		{name: "dotdot after a dir", escape: "a/../../escape",
			entries: func(v victims) []tent { return []tent{dir("a/"), file("a/../../escape", "x")} }},
		{name: "deep dotdot", escape: "a/b/../../../escape",
			entries: func(v victims) []tent {
				return []tent{dir("a/"), dir("a/b/"), file("a/b/../../../escape", "x")}
			}},
		{name: "absolute dotdot", escape: "/../escape",
			entries: func(v victims) []tent { return []tent{file("/../escape", "x")} }},
		{name: "dotdot dir", escape: "../escapedir/",
			entries: func(v victims) []tent { return []tent{dir("../escapedir/")} }},
		{name: "dotdot symlink name", escape: "../evil",
			entries: func(v victims) []tent { return []tent{symlink("../evil", "/")} }},

		// Writes through symlinks that lead out.
		{name: "absolute symlink then write through", escape: "evil/pwned",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), file("evil/pwned", "x")} }},
		{name: "absolute symlink then overwrite", escape: "evil/sentinel",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), file("evil/sentinel", "x")} }},
		{name: "relative symlink escape", escape: "evil/victim/pwned",
			entries: func(v victims) []tent { return []tent{evilTo("../../../../"), file("evil/victim/pwned", "x")} }},
		{name: "symlink chain to root", escape: "a/" + "VICTIM/x",
			entries: func(v victims) []tent {
				return []tent{symlink("a", "b"), symlink("b", "/"), file("a/"+abs(v.dir)+"/x", "x")}
			}},
		{name: "relative symlink chain", escape: "a/x",
			entries: func(v victims) []tent {
				return []tent{symlink("a", "b"), symlink("b", "../../../../victim"), file("a/x", "x")}
			}},
		{name: "magic link", escape: "evil/" + "VICTIM/x",
			entries: func(v victims) []tent {
				return []tent{evilTo("/proc/self/root"), file("evil/"+abs(v.dir)+"/x", "x")}
			}},
		{name: "symlink loop", escape: "a/x",
			entries: func(v victims) []tent { return []tent{symlink("a", "a"), file("a/x", "x")} }},
		{name: "missing parents under escaping symlink", escape: "evil/a/b/c",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), file("evil/a/b/c", "x")} }},
		{name: "directory through escaping symlink", escape: "evil/newdir/",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), dir("evil/newdir/")} }},
		{name: "device through escaping symlink", escape: "evil/null",
			entries: func(v victims) []tent {
				return []tent{evilTo(v.dir), {name: "evil/null", typ: tar.TypeChar, major: 1, minor: 3}}
			}},
		{name: "fifo through escaping symlink", escape: "evil/fifo",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), {name: "evil/fifo", typ: tar.TypeFifo}} }},
		{name: "symlink through escaping symlink", escape: "evil/link",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), symlink("evil/link", "/")} }},

		// Hardlinks.
		{name: "hardlink to dotdot", escape: "x",
			entries: func(v victims) []tent { return []tent{hardlink("x", "../outside")} }},
		{name: "hardlink to absolute path through symlink", escape: "x",
			entries: func(v victims) []tent { return []tent{symlink("etc", v.dir), hardlink("x", "/etc/sentinel")} }},
		{name: "hardlink through escaping symlink dir", escape: "x",
			entries: func(v victims) []tent {
				return []tent{evilTo("../../../../victim"), hardlink("x", "evil/sentinel")}
			}},
		{name: "hardlink placed through escaping symlink", escape: "evil/x",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), file("f", "f"), hardlink("evil/x", "f")} }},

		// Whiteouts and opaque markers.
		{name: "whiteout with traversal", escape: "../.wh.victim",
			entries: func(v victims) []tent { return []tent{file("../.wh.victim", "")} }},
		{name: "whiteout of dotdot", escape: ".wh...",
			entries: func(v victims) []tent { return []tent{file(".wh...", "")} }},
		{name: "whiteout under escaping symlink", escape: "evil/.wh.sentinel",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), file("evil/.wh.sentinel", "")} }},
		{name: "opaque marker under escaping symlink", escape: "evil/.wh..wh..opq",
			entries: func(v victims) []tent { return []tent{evilTo(v.dir), file("evil/.wh..wh..opq", "")} }},
		{name: "opaque marker with traversal", escape: "../.wh..wh..opq",
			entries: func(v victims) []tent { return []tent{file("../.wh..wh..opq", "")} }},

		// Names that are the root itself.
		{name: "file named dot", escape: ".",
			entries: func(v victims) []tent { return []tent{file(".", "x")} }},
		{name: "symlink named dot slash", escape: "./",
			entries: func(v victims) []tent { return []tent{symlink("./", v.dir)} }},
		{name: "symlink named slash", escape: "/",
			entries: func(v victims) []tent { return []tent{symlink("/", v.dir)} }},
		{name: "empty name", escape: "",
			entries: func(v victims) []tent { return []tent{file("", "x")} }},

		// Replacing a symlink must not follow it.
		{name: "file replaces symlink to victim file",
			entries: func(v victims) []tent { return []tent{symlink("x", v.file), file("x", "mine")} },
			ok: func(t *testing.T, v victims) {
				if got := readFile(t, filepath.Join(v.layer, "x")); got != "mine" {
					t.Errorf("x = %q, want the entry's own content", got)
				}
			}},
		{name: "dir replaces symlink to victim dir",
			entries: func(v victims) []tent { return []tent{symlink("x", v.dir), dir("x/"), file("x/f", "mine")} },
			ok: func(t *testing.T, v victims) {
				if st := lstat(t, filepath.Join(v.layer, "x")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
					t.Errorf("x: mode %o, want a directory", st.Mode)
				}
			}},
		{name: "fifo replaces symlink to victim file",
			entries: func(v victims) []tent { return []tent{symlink("x", v.file), {name: "x", typ: tar.TypeFifo}} },
			ok: func(t *testing.T, v victims) {
				if st := lstat(t, filepath.Join(v.layer, "x")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
					t.Errorf("x: mode %o, want a fifo", st.Mode)
				}
			}},
		{name: "hardlink replaces symlink to victim file",
			entries: func(v victims) []tent { return []tent{file("f", "mine"), symlink("x", v.file), hardlink("x", "f")} },
			ok: func(t *testing.T, v victims) {
				if got := readFile(t, filepath.Join(v.layer, "x")); got != "mine" {
					t.Errorf("x = %q, want f's content", got)
				}
			}},
		{name: "hardlink to escaping symlink links the symlink itself",
			entries: func(v victims) []tent { return []tent{evilTo(v.file), hardlink("x", "evil")} },
			ok: func(t *testing.T, v victims) {
				if got, err := os.Readlink(filepath.Join(v.layer, "x")); err != nil || got != v.file {
					t.Errorf("x -> %q (%v), want a second name of the symlink", got, err)
				}
			}},

		// Symlinks that stay inside the root may be followed.
		{name: "symlinks inside the root are followed",
			entries: func(v victims) []tent {
				return []tent{dir("d/"), symlink("s", "d"), file("s/f", "1"), symlink("d/up", "../d"), file("d/up/g", "2")}
			},
			ok: func(t *testing.T, v victims) {
				if readFile(t, filepath.Join(v.layer, "d/f")) != "1" || readFile(t, filepath.Join(v.layer, "d/g")) != "2" {
					t.Error("files written through inside symlinks are not in d/")
				}
			}},

		// Not escapes, but refused all the same.
		{name: "hardlink to a name outside the layer's own files", wantErr: "does not exist in this layer",
			entries: func(v victims) []tent { return []tent{hardlink("x", v.file)} }},
		{name: "overlay xattr", wantErr: "trusted.overlay.redirect",
			entries: func(v victims) []tent {
				return []tent{{name: "d/", typ: tar.TypeDir, xattrs: map[string]string{"trusted.overlay.redirect": v.dir}}}
			}},
	}
}

func TestApplyRefusesEscapes(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			v := newVictims(t)
			entries := tc.entries(v)
			before := snapshot(t, v.base, v.layer)
			err := applyBytes(v.layer, buildTar(t, entries...), testOpts())
			diffSnapshots(t, before, snapshot(t, v.base, v.layer))
			if got := readFile(t, filepath.Join(v.dir, "sentinel")); got != sentinel {
				t.Errorf("victim sentinel now %q", got)
			}

			switch {
			case tc.ok != nil:
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				tc.ok(t, v)
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want an invalid-argument error containing %q", err, tc.wantErr)
				}
			default:
				var esc *EscapeError
				if !errors.As(err, &esc) {
					t.Fatalf("err = %v, want an *EscapeError", err)
				}
				want := strings.ReplaceAll(tc.escape, "VICTIM", abs(v.dir))
				if esc.Entry != want {
					t.Errorf("EscapeError.Entry = %q, want %q (%v)", esc.Entry, want, err)
				}
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Errorf("err = %v, not of class ErrInvalidArgument", err)
				}
			}
		})
	}
}
