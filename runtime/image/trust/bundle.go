package trust

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/runclet/runclet/internal/errdefs"
)

// sigstore bundles, as `cosign sign --new-bundle-format` attaches them:
// an OCI artifact whose subject is the image manifest, found through the
// referrers API (go-containerregistry falls back to the referrers tag
// schema, sha256-<hex>, where a registry has no such API).
const (
	BundleArtifactPrefix = "application/vnd.dev.sigstore.bundle"
	maxBundles           = 16
	maxBundleBytes       = 1 << 20
)

func isBundleType(mt string) bool { return strings.HasPrefix(mt, BundleArtifactPrefix) }

func fetchBundles(repo name.Repository, d digest.Digest, opts []remote.Option) ([]candidate, error) {
	idx, err := remote.Referrers(repo.Digest(d.String()), opts...)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []candidate
	for _, desc := range im.Manifests {
		if !isBundleType(desc.ArtifactType) {
			continue
		}
		if len(out) == maxBundles {
			break
		}
		art, err := remote.Image(repo.Digest(desc.Digest.String()), opts...)
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", desc.Digest, err)
		}
		m, err := art.Manifest()
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", desc.Digest, err)
		}
		for _, l := range m.Layers {
			if !isBundleType(string(l.MediaType)) {
				continue
			}
			c := candidate{format: formatBundle}
			if l.Size <= maxBundleBytes {
				layer, err := art.LayerByDigest(l.Digest)
				if err != nil {
					return nil, err
				}
				rc, err := layer.Compressed()
				if err != nil {
					return nil, err
				}
				data, err := io.ReadAll(io.LimitReader(rc, maxBundleBytes+1))
				rc.Close()
				if err != nil {
					return nil, fmt.Errorf("bundle %s: %w", l.Digest, err)
				}
				if len(data) <= maxBundleBytes {
					c.bundle = data
				}
			}
			out = append(out, c)
			break
		}
	}
	return out, nil
}

// checkBundle checks one sigstore bundle for d. Keyless bundles are
// verified against the trusted root (certificate chain to a Fulcio CA,
// transparency log entry by inclusion proof or signed entry timestamp,
// signature over d); one that fails is broken whoever made it. Then its
// identity is matched against r's identities: no match returns the
// identity it has. Bundles signed with a public key are another signer's
// unless... runclet trusts keys through the tag scheme only.
func (v *Verifier) checkBundle(r *Rule, d digest.Digest, c candidate) (*Signer, string, error) {
	if c.bundle == nil {
		return nil, "", fmt.Errorf("bundle missing or over %d bytes", maxBundleBytes)
	}
	b := &bundle.Bundle{}
	if err := b.UnmarshalJSON(c.bundle); err != nil {
		return nil, "", fmt.Errorf("bundle: %w", err)
	}
	vc, err := b.VerificationContent()
	if err != nil {
		return nil, "", fmt.Errorf("bundle: %w", err)
	}
	if vc.Certificate() == nil {
		return nil, "", nil // a keyed bundle: not a signer runclet can name
	}
	if len(r.Identities) == 0 {
		return nil, "keyless " + certIdentity(vc), nil
	}
	tm, err := v.trustedMaterial()
	if err != nil {
		return nil, "", err
	}
	sv, err := verify.NewVerifier(tm, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1))
	if err != nil {
		return nil, "", err
	}
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil || d.Algorithm() != digest.SHA256 {
		return nil, "", fmt.Errorf("digest %s: only sha256 manifests are signed", d)
	}
	res, err := sv.Verify(b, verify.NewPolicy(verify.WithArtifactDigest("sha256", raw), verify.WithoutIdentitiesUnsafe()))
	if err != nil {
		return nil, "", err
	}
	if res.Signature == nil || res.Signature.Certificate == nil {
		return nil, "", errors.New("bundle verified without a certificate")
	}
	sum := *res.Signature.Certificate
	for _, id := range r.Identities {
		ci, err := verify.NewShortCertificateIdentity(id.Issuer, id.IssuerRegexp, id.Subject, id.SubjectRegexp)
		if err != nil {
			return nil, "", err
		}
		if ci.Verify(sum) == nil {
			return &Signer{Issuer: sum.Issuer, Subject: sum.SubjectAlternativeName, Format: formatBundle}, "", nil
		}
	}
	return nil, sum.Issuer + " " + sum.SubjectAlternativeName, nil
}

func certIdentity(vc verify.VerificationContent) string {
	cert := vc.Certificate()
	var sans []string
	sans = append(sans, cert.EmailAddresses...)
	for _, u := range cert.URIs {
		sans = append(sans, u.String())
	}
	return strings.Join(sans, ",")
}

// checkTagKeyless would verify a keyless signature of the tag scheme
// (certificate and Rekor bundle in annotations). runclet verifies keyless
// signatures as sigstore bundles only; such a signature counts as
// another signer's.
func (v *Verifier) checkTagKeyless(r *Rule, c candidate) (*Signer, string, error) {
	return nil, "", nil
}

// trustedRoot caches the parsed trusted root file, re-read when it
// changes.
type trustedRoot struct {
	stat os.FileInfo
	tm   root.TrustedMaterial
}

func (v *Verifier) trustedMaterial() (root.TrustedMaterial, error) {
	v.rootMu.Lock()
	defer v.rootMu.Unlock()
	st, err := os.Stat(v.TrustedRoot)
	if errors.Is(err, fs.ErrNotExist) || v.TrustedRoot == "" {
		return nil, errdefs.FailedPrecondition("keyless signatures need a sigstore trusted root: none at %q (set [trust] trusted_root)", v.TrustedRoot)
	}
	if err != nil {
		return nil, errdefs.FailedPrecondition("trusted root: %w", err)
	}
	if v.root != nil && sameFile(st, v.root.stat) {
		return v.root.tm, nil
	}
	tr, err := root.NewTrustedRootFromPath(v.TrustedRoot)
	if err != nil {
		return nil, errdefs.FailedPrecondition("trusted root %s: %w", v.TrustedRoot, err)
	}
	v.root = &trustedRoot{stat: st, tm: tr}
	return tr, nil
}
