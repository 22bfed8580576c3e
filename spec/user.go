package spec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// The supplemental groups policies of CRI (KEP-3619).
const (
	SupplementalGroupsMerge  = "Merge"
	SupplementalGroupsStrict = "Strict"
)

// Paths of the image's account databases. They are read from the image, never
// from the host: a name means whatever the image says it means.
const (
	passwdPath = "/etc/passwd"
	groupPath  = "/etc/group"
)

// maxID is the largest usable uid or gid: (uid_t)-1 means "no change" to the
// kernel, so it cannot be a process's id.
const maxID = math.MaxUint32 - 1

// parseUser splits a USER string ("name", "uid", "name:group", "uid:gid",
// "uid:group") into its user and group parts. An empty string is valid and
// means "not set".
func parseUser(s string) (user, group string, err error) {
	if s == "" {
		return "", "", nil
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", "", errdefs.InvalidArgument("user %q contains control characters", s)
	}
	user, group, hasGroup := strings.Cut(s, ":")
	switch {
	case user == "":
		return "", "", errdefs.InvalidArgument("user %q has an empty user part", s)
	case hasGroup && group == "":
		return "", "", errdefs.InvalidArgument("user %q has an empty group part", s)
	case strings.Contains(group, ":"):
		return "", "", errdefs.InvalidArgument("user %q has more than one ':'", s)
	}
	return user, group, nil
}

// parseID parses a decimal uid or gid; ok is false for anything that is not a
// plain number, which then is a name.
func parseID(s string) (id uint32, ok bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxID {
		return 0, false
	}
	return uint32(n), true
}

// passwdEntry is the part of an /etc/passwd line that matters here.
type passwdEntry struct {
	name     string
	uid, gid uint32
}

// groupEntry is the part of an /etc/group line that matters here.
type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// dbLines yields the colon-separated fields of the meaningful lines of an
// account database: comments, blank lines and NIS compat entries ("+", "-")
// are skipped.
func dbLines(data []byte, minFields int, fn func(fields []string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < minFields {
			continue
		}
		fn(fields)
	}
}

func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	dbLines(data, 4, func(f []string) {
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if f[0] == "" || !ok1 || !ok2 {
			return
		}
		out = append(out, passwdEntry{name: f[0], uid: uid, gid: gid})
	})
	return out
}

func parseGroup(data []byte) []groupEntry {
	var out []groupEntry
	dbLines(data, 3, func(f []string) {
		gid, ok := parseID(f[2])
		if f[0] == "" || !ok {
			return
		}
		g := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.members = append(g.members, m)
				}
			}
		}
		out = append(out, g)
	})
	return out
}

// accounts is the image's view of users and groups.
type accounts struct {
	passwd    []passwdEntry
	group     []groupEntry
	hasPasswd bool
	hasGroup  bool
}

// readImageFile reads one file of the image; found is false when it is absent.
func readImageFile(files ImageFiles, path string) (data []byte, found bool, err error) {
	if files == nil {
		return nil, false, nil
	}
	data, err = files(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read the image's %s: %w", path, err)
	}
	return data, true, nil
}

func loadAccounts(files ImageFiles) (*accounts, error) {
	a := &accounts{}
	data, found, err := readImageFile(files, passwdPath)
	if err != nil {
		return nil, err
	}
	a.passwd, a.hasPasswd = parsePasswd(data), found
	data, found, err = readImageFile(files, groupPath)
	if err != nil {
		return nil, err
	}
	a.group, a.hasGroup = parseGroup(data), found
	return a, nil
}

func (a *accounts) userByName(name string) (passwdEntry, bool) {
	i := slices.IndexFunc(a.passwd, func(e passwdEntry) bool { return e.name == name })
	if i < 0 {
		return passwdEntry{}, false
	}
	return a.passwd[i], true
}

func (a *accounts) userByUID(uid uint32) (passwdEntry, bool) {
	i := slices.IndexFunc(a.passwd, func(e passwdEntry) bool { return e.uid == uid })
	if i < 0 {
		return passwdEntry{}, false
	}
	return a.passwd[i], true
}

func (a *accounts) groupByName(name string) (groupEntry, bool) {
	i := slices.IndexFunc(a.group, func(e groupEntry) bool { return e.name == name })
	if i < 0 {
		return groupEntry{}, false
	}
	return a.group[i], true
}

func (a *accounts) userNotFound(name string) error {
	if !a.hasPasswd {
		return errdefs.InvalidArgument("user %q not found in the image's /etc/passwd (the image has none)", name)
	}
	return errdefs.InvalidArgument("user %q not found in the image's /etc/passwd", name)
}

// lookupUser resolves the user part of a USER string: a number is used as is
// (a uid without a passwd entry is fine, as in Docker), a name must exist.
func (a *accounts) lookupUser(user string) (uid uint32, entry passwdEntry, known bool, err error) {
	if id, ok := parseID(user); ok {
		e, known := a.userByUID(id)
		return id, e, known, nil
	}
	e, ok := a.userByName(user)
	if !ok {
		return 0, passwdEntry{}, false, a.userNotFound(user)
	}
	return e.uid, e, true, nil
}

// lookupGroup resolves the group part of a USER string.
func (a *accounts) lookupGroup(group string) (uint32, error) {
	if id, ok := parseID(group); ok {
		return id, nil
	}
	g, ok := a.groupByName(group)
	if !ok {
		return 0, errdefs.InvalidArgument("group %q not found in the image's /etc/group", group)
	}
	return g.gid, nil
}

// memberGIDs returns the gids of the groups that list name as a member.
func (a *accounts) memberGIDs(name string) []uint32 {
	if name == "" {
		return nil
	}
	var gids []uint32
	for _, g := range a.group {
		if slices.Contains(g.members, name) {
			gids = append(gids, g.gid)
		}
	}
	return gids
}

// checkID checks a CRI int64 id and narrows it to a uid/gid.
func checkID(what string, v int64) (uint32, error) {
	if v < 0 || v > maxID {
		return 0, errdefs.InvalidArgument("%s %d is out of range [0, %d]", what, v, uint32(maxID))
	}
	return uint32(v), nil
}

// identity is the user an app runs as, before supplemental groups.
type identity struct {
	uid, gid uint32
	name     string // passwd name, "" when the uid has no entry
}

// resolveIdentity picks the uid, primary gid and user name. CRI's
// run_as_user / run_as_username win over the app's User, which wins over the
// image's USER; run_as_group wins over any group.
func resolveIdentity(img ocispec.ImageConfig, a *accounts, app App) (identity, error) {
	var id identity
	var explicitGID *uint32
	switch {
	case app.RunAsUser != nil:
		uid, err := checkID("run_as_user", *app.RunAsUser)
		if err != nil {
			return id, err
		}
		id.uid = uid
		if e, ok := a.userByUID(uid); ok {
			id.gid, id.name = e.gid, e.name
		}
	case app.RunAsUsername != "":
		e, ok := a.userByName(app.RunAsUsername)
		if !ok {
			return id, a.userNotFound(app.RunAsUsername)
		}
		id = identity{uid: e.uid, gid: e.gid, name: e.name}
	default:
		s := app.User
		if s == "" {
			s = img.User
		}
		user, group, err := parseUser(s)
		if err != nil {
			return id, err
		}
		if user == "" {
			user = "0"
		}
		uid, e, known, err := a.lookupUser(user)
		if err != nil {
			return id, err
		}
		id.uid = uid
		if known {
			id.gid, id.name = e.gid, e.name
		}
		if group != "" {
			gid, err := a.lookupGroup(group)
			if err != nil {
				return id, err
			}
			explicitGID = &gid
		}
	}
	if app.RunAsGroup != nil {
		gid, err := checkID("run_as_group", *app.RunAsGroup)
		if err != nil {
			return id, err
		}
		explicitGID = &gid
	}
	if explicitGID != nil {
		id.gid = *explicitGID
	}
	return id, nil
}

// additionalGIDs builds the process's groups: the primary gid first, then,
// sorted and without duplicates, the image's memberships (policy Merge only)
// and the supplemental groups. Keeping the primary gid in the list matches
// containerd, so `id -G` shows it whatever the policy.
func additionalGIDs(a *accounts, id identity, app App) ([]uint32, error) {
	policy := app.SupplementalGroupsPolicy
	if policy == "" {
		policy = SupplementalGroupsMerge
	}
	var rest []uint32
	switch policy {
	case SupplementalGroupsMerge:
		rest = append(rest, a.memberGIDs(id.name)...)
	case SupplementalGroupsStrict:
	default:
		return nil, errdefs.InvalidArgument("supplemental groups policy %q is not %q or %q",
			app.SupplementalGroupsPolicy, SupplementalGroupsMerge, SupplementalGroupsStrict)
	}
	for _, g := range app.SupplementalGroups {
		gid, err := checkID("supplemental group", g)
		if err != nil {
			return nil, err
		}
		rest = append(rest, gid)
	}
	slices.Sort(rest)
	rest = slices.Compact(rest)
	rest = slices.DeleteFunc(rest, func(g uint32) bool { return g == id.gid })
	return append([]uint32{id.gid}, rest...), nil
}

// resolveUser computes the spec's process user from the image, its account
// files and the app request.
func resolveUser(img ocispec.ImageConfig, files ImageFiles, app App) (specs.User, error) {
	a, err := loadAccounts(files)
	if err != nil {
		return specs.User{}, err
	}
	id, err := resolveIdentity(img, a, app)
	if err != nil {
		return specs.User{}, err
	}
	gids, err := additionalGIDs(a, id, app)
	if err != nil {
		return specs.User{}, err
	}
	return specs.User{UID: id.uid, GID: id.gid, AdditionalGids: gids}, nil
}
