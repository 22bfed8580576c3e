// Package trust decides whether an image from a registry may be stored:
// a policy of rules by registry/repository prefix (accept, signed by some
// keys or keyless identities, reject), and the verification of cosign
// signatures (the sha256-<digest>.sig tag scheme, and sigstore bundles
// attached as OCI referrers) with sigstore's libraries. It writes no
// cryptography of its own.
package trust

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/config"
)

// Actions a rule can take.
const (
	Accept = "accept"
	Signed = "signed"
	Reject = "reject"
)

// Policy is a parsed, validated set of rules.
type Policy struct {
	// Default applies to names no rule covers: Accept or Reject.
	Default string
	Rules   []Rule
}

// Rule is one validated rule.
type Rule struct {
	Prefix     string
	Action     string
	Keys       []Key
	Identities []Identity
	// Threshold is how many distinct signers must have signed (>= 1 for
	// a signed rule).
	Threshold int
	// Source says where the rule was written: the config or policy file.
	Source string
}

// Key is a trusted public key.
type Key struct {
	Public crypto.PublicKey
	// ID is "SHA256:<hex>" of the key's DER (SubjectPublicKeyInfo), the
	// name runclet shows for it.
	ID string
	// Spec is the key as written in the policy (a path or the PEM).
	Spec string
}

// Identity is a trusted keyless signer.
type Identity struct {
	Issuer, IssuerRegexp, Subject, SubjectRegexp string
}

func (id Identity) String() string {
	iss, sub := id.Issuer, id.Subject
	if iss == "" {
		iss = "~" + id.IssuerRegexp
	}
	if sub == "" {
		sub = "~" + id.SubjectRegexp
	}
	return iss + " " + sub
}

// File is the policy file's shape (trust.toml).
type File struct {
	// Default, when set, replaces the configuration's trust.default.
	Default string             `toml:"default,omitempty"`
	Rules   []config.TrustRule `toml:"rules"`
}

// NormalizePrefix spells a prefix the way image names are stored: no
// scheme, no trailing slash, Docker Hub as docker.io.
func NormalizePrefix(p string) string {
	p = strings.TrimSpace(p)
	p = strings.TrimPrefix(strings.TrimPrefix(p, "https://"), "http://")
	p = strings.TrimRight(p, "/")
	host, rest, hasPath := strings.Cut(p, "/")
	switch strings.ToLower(host) {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		host = "docker.io"
	default:
		host = strings.ToLower(host)
	}
	if hasPath {
		return host + "/" + rest
	}
	return host
}

// matchLen is how much of name prefix covers (its length), or -1. A
// prefix covers a name equal to it or continuing it at a "/"; a prefix
// that is a bare host without a port also covers that host on any port.
func matchLen(prefix, name string) int {
	if name == prefix || strings.HasPrefix(name, prefix+"/") {
		return len(prefix)
	}
	if !strings.ContainsAny(prefix, "/:") {
		host, _, _ := strings.Cut(name, "/")
		if h, _, ok := strings.Cut(host, ":"); ok && h == prefix {
			return len(prefix)
		}
	}
	return -1
}

// Match returns the rule for a normalized image name ("host/path"): the
// one with the longest prefix covering it, or nil when none does (the
// default applies).
func (p *Policy) Match(name string) *Rule {
	var best *Rule
	bestLen := -1
	for i := range p.Rules {
		if n := matchLen(p.Rules[i].Prefix, name); n > bestLen {
			best, bestLen = &p.Rules[i], n
		}
	}
	return best
}

// Build validates rules and the default into a Policy. Keys given as
// paths are read relative to baseDir. Later rules replace earlier ones
// with the same prefix (the policy file's come after the config's).
func Build(def string, baseDir string, sources ...RuleSource) (*Policy, error) {
	if def != Accept && def != Reject {
		return nil, errdefs.InvalidArgument("trust default %q: want reject or accept", def)
	}
	p := &Policy{Default: def}
	for _, src := range sources {
		for i, cr := range src.Rules {
			r, err := buildRule(cr, baseDir)
			if err != nil {
				return nil, errdefs.InvalidArgument("trust rule %d of %s: %w", i+1, src.Name, err)
			}
			r.Source = src.Name
			p.Rules = slices.DeleteFunc(p.Rules, func(o Rule) bool { return o.Prefix == r.Prefix })
			p.Rules = append(p.Rules, r)
		}
	}
	return p, nil
}

// RuleSource is a named list of rules.
type RuleSource struct {
	Name  string
	Rules []config.TrustRule
}

func buildRule(cr config.TrustRule, baseDir string) (Rule, error) {
	r := Rule{Prefix: NormalizePrefix(cr.Prefix), Action: cr.Action, Threshold: cr.Threshold}
	if r.Prefix == "" {
		return r, fmt.Errorf("empty prefix (the default covers everything else)")
	}
	switch cr.Action {
	case Accept, Reject:
		if len(cr.Keys) > 0 || len(cr.Identities) > 0 || cr.Threshold != 0 {
			return r, fmt.Errorf("%s: an %s rule takes no keys, identities or threshold", r.Prefix, cr.Action)
		}
		return r, nil
	case Signed:
	default:
		return r, fmt.Errorf("%s: action %q: want accept, signed or reject", r.Prefix, cr.Action)
	}
	seen := map[string]bool{}
	for _, spec := range cr.Keys {
		k, err := LoadKey(spec, baseDir)
		if err != nil {
			return r, fmt.Errorf("%s: %w", r.Prefix, err)
		}
		if !seen[k.ID] {
			seen[k.ID] = true
			r.Keys = append(r.Keys, k)
		}
	}
	for _, ci := range cr.Identities {
		id := Identity(ci)
		if (id.Issuer == "") == (id.IssuerRegexp == "") || (id.Subject == "") == (id.SubjectRegexp == "") {
			return r, fmt.Errorf("%s: identity wants exactly one of issuer and issuer_regexp, and one of subject and subject_regexp", r.Prefix)
		}
		for _, re := range []string{id.IssuerRegexp, id.SubjectRegexp} {
			if re != "" {
				if _, err := regexp.Compile(re); err != nil {
					return r, fmt.Errorf("%s: identity regexp %q: %w", r.Prefix, re, err)
				}
			}
		}
		r.Identities = append(r.Identities, id)
	}
	n := len(r.Keys) + len(r.Identities)
	if n == 0 {
		return r, fmt.Errorf("%s: a signed rule needs at least one key or identity", r.Prefix)
	}
	if r.Threshold == 0 {
		r.Threshold = 1
	}
	if r.Threshold < 1 || r.Threshold > n {
		return r, fmt.Errorf("%s: threshold %d: want 1 to %d (its keys and identities)", r.Prefix, cr.Threshold, n)
	}
	return r, nil
}

// LoadKey reads a PEM public key given inline or as a file path (relative
// to baseDir): ECDSA, Ed25519 or RSA, as cosign writes them.
func LoadKey(spec, baseDir string) (Key, error) {
	data := []byte(spec)
	if !strings.Contains(spec, "-----BEGIN") {
		path := spec
		if !filepath.IsAbs(path) && baseDir != "" {
			path = filepath.Join(baseDir, path)
		}
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Key{}, fmt.Errorf("key %s: %w", spec, err)
		}
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(data)
	if err != nil {
		return Key{}, fmt.Errorf("key %s: not a PEM public key: %w", shorten(spec), err)
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return Key{}, fmt.Errorf("key %s: %w", shorten(spec), err)
	}
	sum := sha256.Sum256(der)
	return Key{Public: pub, ID: "SHA256:" + hex.EncodeToString(sum[:]), Spec: spec}, nil
}

func shorten(spec string) string {
	if strings.Contains(spec, "-----BEGIN") {
		return "(inline PEM)"
	}
	return spec
}

// ShortID is a key ID cut to its first 16 hex digits, for tables.
func ShortID(id string) string {
	if len(id) > len("SHA256:")+16 {
		return id[:len("SHA256:")+16]
	}
	return id
}

// ParseFile decodes a policy file.
func ParseFile(data []byte, source string) (*File, error) {
	f := &File{}
	md, err := toml.Decode(string(data), f)
	if err != nil {
		return nil, errdefs.InvalidArgument("trust policy %s: %w", source, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, errdefs.InvalidArgument("trust policy %s: unknown keys: %s", source, strings.Join(keys, ", "))
	}
	if f.Default != "" && f.Default != Accept && f.Default != Reject {
		return nil, errdefs.InvalidArgument("trust policy %s: default %q: want reject or accept", source, f.Default)
	}
	return f, nil
}
