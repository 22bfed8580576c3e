package image

import (
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/internal/errdefs"
)

// Reference is a parsed, normalized image reference: "docker.io/library/
// busybox:latest" for "busybox", as containerd and kubelet spell it, so the
// names runclet stores are the names kubelet asks for.
type Reference struct {
	// Repo is "host/path", e.g. "docker.io/library/busybox".
	Repo string
	// Tag is set for tag references ("latest" when none was given).
	Tag string
	// Digest is set for digest references.
	Digest digest.Digest
	ref    name.Reference
}

// String is the full normalized reference.
func (r Reference) String() string {
	if r.Digest != "" {
		return r.Repo + "@" + r.Digest.String()
	}
	return r.Repo + ":" + r.Tag
}

// Host is the registry host part of Repo.
func (r Reference) Host() string {
	host, _, _ := strings.Cut(r.Repo, "/")
	return host
}

// Path is the repository path within the registry.
func (r Reference) Path() string {
	_, path, _ := strings.Cut(r.Repo, "/")
	return path
}

// ParseReference parses and normalizes an image reference.
func ParseReference(s string) (Reference, error) {
	if s == "" {
		return Reference{}, errdefs.InvalidArgument("empty image reference")
	}
	// "repo:tag@digest" is valid; the digest wins, as in containerd.
	if i := strings.Index(s, "@"); i > 0 {
		if j := strings.LastIndex(s[:i], ":"); j > strings.LastIndex(s[:i], "/") {
			s = s[:j] + s[i:]
		}
	}
	ref, err := name.ParseReference(s, name.StrictValidation)
	if err != nil {
		// StrictValidation refuses implicit defaults; retry leniently so
		// "busybox" means docker.io/library/busybox:latest.
		ref, err = name.ParseReference(s)
		if err != nil {
			return Reference{}, errdefs.InvalidArgument("invalid image reference %q: %w", s, err)
		}
	}
	r := Reference{Repo: displayRepo(ref.Context()), ref: ref}
	switch v := ref.(type) {
	case name.Tag:
		r.Tag = v.TagStr()
	case name.Digest:
		d, err := digest.Parse(v.DigestStr())
		if err != nil {
			return Reference{}, errdefs.InvalidArgument("invalid digest in %q: %w", s, err)
		}
		r.Digest = d
	}
	return r, nil
}

// displayRepo spells Docker Hub as "docker.io", the way kubelet and
// containerd do, where go-containerregistry says "index.docker.io".
func displayRepo(repo name.Repository) string {
	host := repo.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	return host + "/" + repo.RepositoryStr()
}

// WithTag returns a tag reference in the same repository.
func (r Reference) WithTag(tag string) Reference {
	return Reference{Repo: r.Repo, Tag: tag}
}

// WithDigest returns a digest reference in the same repository.
func (r Reference) WithDigest(d digest.Digest) Reference {
	return Reference{Repo: r.Repo, Digest: d}
}
