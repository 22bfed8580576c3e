package spec

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/runclet/runclet/internal/errdefs"
)

func TestParseUser(t *testing.T) {
	tests := []struct {
		in, user, group string
		bad             bool
	}{
		{in: ""},
		{in: "www-data", user: "www-data"},
		{in: "1000", user: "1000"},
		{in: "www-data:staff", user: "www-data", group: "staff"},
		{in: "1000:1000", user: "1000", group: "1000"},
		{in: "1000:staff", user: "1000", group: "staff"},
		{in: ":1000", bad: true},
		{in: "1000:", bad: true},
		{in: "a:b:c", bad: true},
		{in: "a\nb", bad: true},
	}
	for _, tc := range tests {
		u, g, err := parseUser(tc.in)
		if tc.bad {
			wantInvalid(t, err)
			continue
		}
		if err != nil || u != tc.user || g != tc.group {
			t.Errorf("parseUser(%q) = %q, %q, %v; want %q, %q", tc.in, u, g, err, tc.user, tc.group)
		}
	}
}

func FuzzParseUser(f *testing.F) {
	for _, s := range []string{"", "root", "0", "1000:1000", "www-data:staff", ":", "a:b:c", "4294967295", "-1", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		user, group, err := parseUser(s)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("parseUser(%q) error %v is not an invalid argument", s, err)
			}
			return
		}
		joined := user
		if group != "" {
			joined += ":" + group
		}
		if joined != s {
			t.Fatalf("parseUser(%q) = %q, %q: does not join back", s, user, group)
		}
		if s != "" && user == "" {
			t.Fatalf("parseUser(%q) accepted an empty user", s)
		}
		// Resolution must not panic either, whatever the string.
		_, _ = resolveUser(ocispec.ImageConfig{User: s}, busyboxFiles(), App{})
	})
}

const memberGroups = busyboxGroup + `ops:x:2000:www-data,operator
audit:x:2001:operator
`

func TestResolveUser(t *testing.T) {
	files := imageFiles(map[string]string{"/etc/passwd": busyboxPasswd, "/etc/group": memberGroups})
	noFiles := imageFiles(nil)
	tests := []struct {
		name     string
		imgUser  string
		app      App
		files    ImageFiles
		uid, gid uint32
		gids     []uint32
		err      string // substring of an invalid argument error
	}{
		{name: "default is root with memberships", files: files, uid: 0, gid: 0, gids: []uint32{0, 10}},
		{name: "image user name", imgUser: "www-data", files: files, uid: 33, gid: 33, gids: []uint32{33, 2000}},
		{name: "app user overrides image user", imgUser: "www-data", app: App{User: "operator"}, files: files, uid: 37, gid: 37, gids: []uint32{37, 2000, 2001}},
		{name: "numeric uid in passwd", imgUser: "33", files: files, uid: 33, gid: 33, gids: []uint32{33, 2000}},
		{name: "numeric uid not in passwd", imgUser: "4242", files: files, uid: 4242, gid: 0, gids: []uint32{0}},
		{name: "name and group name", imgUser: "www-data:users", files: files, uid: 33, gid: 100, gids: []uint32{100, 2000}},
		{name: "uid and gid", imgUser: "1234:5678", files: files, uid: 1234, gid: 5678, gids: []uint32{5678}},
		{name: "uid and group name", imgUser: "1234:staff", files: files, uid: 1234, gid: 50, gids: []uint32{50}},
		{name: "missing user name", imgUser: "ghost", files: files, err: `user "ghost" not found in the image's /etc/passwd`},
		{name: "missing group name", imgUser: "www-data:ghosts", files: files, err: `group "ghosts" not found in the image's /etc/group`},
		{name: "no passwd with numeric user", imgUser: "1000:1000", files: noFiles, uid: 1000, gid: 1000, gids: []uint32{1000}},
		{name: "no passwd and nil files", imgUser: "1000", files: nil, uid: 1000, gid: 0, gids: []uint32{0}},
		{name: "no passwd with user name", imgUser: "www-data", files: noFiles, err: "not found in the image's /etc/passwd"},
		{name: "run as user overrides image user", imgUser: "www-data", app: App{RunAsUser: ptr(int64(37))}, files: files, uid: 37, gid: 37, gids: []uint32{37, 2000, 2001}},
		{name: "run as user unknown uid gets gid 0", imgUser: "www-data", app: App{RunAsUser: ptr(int64(5000))}, files: files, uid: 5000, gid: 0, gids: []uint32{0}},
		{name: "run as user and group", app: App{RunAsUser: ptr(int64(33)), RunAsGroup: ptr(int64(3000))}, files: files, uid: 33, gid: 3000, gids: []uint32{3000, 2000}},
		{name: "run as group alone overrides image group", imgUser: "www-data:users", app: App{RunAsGroup: ptr(int64(7))}, files: files, uid: 33, gid: 7, gids: []uint32{7, 2000}},
		{name: "run as username", app: App{RunAsUsername: "operator"}, files: files, uid: 37, gid: 37, gids: []uint32{37, 2000, 2001}},
		{name: "run as username missing", app: App{RunAsUsername: "ghost"}, files: files, err: `user "ghost" not found`},
		{name: "run as user wins over username", app: App{RunAsUser: ptr(int64(33)), RunAsUsername: "operator"}, files: files, uid: 33, gid: 33, gids: []uint32{33, 2000}},
		{name: "merge adds supplemental groups sorted and deduplicated", imgUser: "www-data", app: App{SupplementalGroups: []int64{5000, 2000, 33, 1}}, files: files, uid: 33, gid: 33, gids: []uint32{33, 1, 2000, 5000}},
		{name: "strict ignores image memberships", imgUser: "operator", app: App{SupplementalGroupsPolicy: "Strict", SupplementalGroups: []int64{9}}, files: files, uid: 37, gid: 37, gids: []uint32{37, 9}},
		{name: "unknown policy", app: App{SupplementalGroupsPolicy: "Union"}, files: files, err: "supplemental groups policy"},
		{name: "negative run as user", app: App{RunAsUser: ptr(int64(-1))}, files: files, err: "out of range"},
		{name: "too large run as group", app: App{RunAsUser: ptr(int64(1)), RunAsGroup: ptr(int64(1) << 32)}, files: files, err: "out of range"},
		{name: "negative supplemental group", app: App{SupplementalGroups: []int64{-5}}, files: files, err: "out of range"},
		{name: "uid 2^32-1 is a name, not an id", imgUser: "4294967295", files: files, err: "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := resolveUser(ocispec.ImageConfig{User: tc.imgUser}, tc.files, tc.app)
			if tc.err != "" {
				wantInvalid(t, err)
				if !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %q does not contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.UID != tc.uid || u.GID != tc.gid || !slices.Equal(u.AdditionalGids, tc.gids) {
				t.Errorf("user = %d:%d %v, want %d:%d %v", u.UID, u.GID, u.AdditionalGids, tc.uid, tc.gid, tc.gids)
			}
		})
	}
}

func TestResolveUserReadError(t *testing.T) {
	_, err := resolveUser(ocispec.ImageConfig{User: "1000"}, errorFiles, App{})
	if err == nil || errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("error = %v, want the read error", err)
	}
}

func TestAccountParsing(t *testing.T) {
	passwd := "# comment\n\n+nis::0:0::/:\nbad:line\nuid:x:abc:1:::\nok:x:7:8::/:/bin/sh\n"
	p := parsePasswd([]byte(passwd))
	if len(p) != 1 || p[0] != (passwdEntry{name: "ok", uid: 7, gid: 8}) {
		t.Errorf("passwd = %+v", p)
	}
	g := parseGroup([]byte("g:x:5:a, b,,c\nh:x:6\nbad:x:z:\n"))
	if len(g) != 2 || !slices.Equal(g[0].members, []string{"a", "b", "c"}) || g[1].members != nil {
		t.Errorf("group = %+v", g)
	}
}

func TestImageFilesNotExistWrapped(t *testing.T) {
	// An ImageFiles that wraps fs.ErrNotExist deep in its chain still
	// counts as a missing file.
	files := func(string) ([]byte, error) {
		return nil, errors.Join(errors.New("layer lookup"), errdefs.NotFound("x: %w", fs.ErrNotExist))
	}
	u, err := resolveUser(ocispec.ImageConfig{User: "12"}, files, App{})
	if err != nil || u.UID != 12 {
		t.Fatalf("user = %+v, %v", u, err)
	}
}
