package trust

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

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
// identity it has. Bundles signed with a public key count as another
// signer's: runclet trusts keys through the tag scheme.
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
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil || d.Algorithm() != digest.SHA256 {
		return nil, "", fmt.Errorf("digest %s: only sha256 manifests are signed", d)
	}
	return v.verifyKeyless(r, b, verify.WithArtifactDigest("sha256", raw), formatBundle)
}

// verifyKeyless verifies a keyless bundle against the trusted root and
// the artifact, then matches its certificate against r's identities.
func (v *Verifier) verifyKeyless(r *Rule, b *bundle.Bundle, artifact verify.ArtifactPolicyOption, format string) (*Signer, string, error) {
	tm, err := v.trustedMaterial()
	if err != nil {
		return nil, "", err
	}
	sv, err := verify.NewVerifier(tm, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1))
	if err != nil {
		return nil, "", err
	}
	res, err := sv.Verify(b, verify.NewPolicy(artifact, verify.WithoutIdentitiesUnsafe()))
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
			return &Signer{Issuer: sum.Issuer, Subject: sum.SubjectAlternativeName, Format: format}, "", nil
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

// checkTagKeyless verifies a keyless signature of the tag scheme, as
// cosign writes it without --new-bundle-format: the Fulcio certificate
// (and chain) and the Rekor entry with its signed entry timestamp in
// annotations. The pieces are assembled into a v0.1 sigstore bundle (a
// message signature over the payload) and verified like any bundle.
func (v *Verifier) checkTagKeyless(r *Rule, c candidate) (*Signer, string, error) {
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(c.cert)
	if err != nil || len(certs) == 0 {
		return nil, "", fmt.Errorf("certificate annotation: not a PEM certificate")
	}
	if len(c.chain) > 0 {
		chain, err := cryptoutils.UnmarshalCertificatesFromPEM(c.chain)
		if err != nil {
			return nil, "", fmt.Errorf("chain annotation: %w", err)
		}
		certs = append(certs, chain...)
	}
	if len(c.rekor) == 0 {
		return nil, "", fmt.Errorf("a keyless signature without a transparency log entry (%s)", RekorBundleAnnotation)
	}
	var rb struct {
		SignedEntryTimestamp []byte
		Payload              struct {
			Body           string `json:"body"`
			IntegratedTime int64  `json:"integratedTime"`
			LogIndex       int64  `json:"logIndex"`
			LogID          string `json:"logID"`
		}
	}
	if err := json.Unmarshal(c.rekor, &rb); err != nil {
		return nil, "", fmt.Errorf("%s: %w", RekorBundleAnnotation, err)
	}
	body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
	if err != nil {
		return nil, "", fmt.Errorf("%s: body: %w", RekorBundleAnnotation, err)
	}
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil {
		return nil, "", fmt.Errorf("%s: log ID: %w", RekorBundleAnnotation, err)
	}
	var kv struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(body, &kv); err != nil {
		return nil, "", fmt.Errorf("%s: body: %w", RekorBundleAnnotation, err)
	}
	chain := &protocommon.X509CertificateChain{}
	for _, c := range certs {
		chain.Certificates = append(chain.Certificates, &protocommon.X509Certificate{RawBytes: c.Raw})
	}
	sum := sha256.Sum256(c.payload)
	pb := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle+json;version=0.1",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: chain},
			TlogEntries: []*protorekor.TransparencyLogEntry{{
				LogIndex: rb.Payload.LogIndex, LogId: &protocommon.LogId{KeyId: logID},
				KindVersion:    &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion},
				IntegratedTime: rb.Payload.IntegratedTime, CanonicalizedBody: body,
				InclusionPromise: &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
			}},
		},
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     c.sig,
		}},
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return nil, "", err
	}
	return v.verifyKeyless(r, b, verify.WithArtifact(bytes.NewReader(c.payload)), formatTag)
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
