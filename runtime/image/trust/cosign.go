package trust

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// cosign's tag scheme: the signatures of sha256:<hex> are the layers of
// the image tagged sha256-<hex>.sig in the same repository, each a
// simple-signing JSON payload with its signature in an annotation.
const (
	formatTag    = "cosign-tag"
	formatBundle = "sigstore-bundle"

	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
	CertificateAnnotation  = "dev.sigstore.cosign/certificate"
	ChainAnnotation        = "dev.sigstore.cosign/chain"
	RekorBundleAnnotation  = "dev.sigstore.cosign/bundle"

	// Bounds on what a registry can make runclet read.
	maxSignatures   = 64
	maxPayloadBytes = 64 << 10
)

// SignatureTag is the cosign tag holding the signatures of d.
func SignatureTag(d digest.Digest) string {
	return fmt.Sprintf("%s-%s.sig", d.Algorithm(), d.Encoded())
}

func fetchTagScheme(repo name.Repository, d digest.Digest, opts []remote.Option) ([]candidate, error) {
	img, err := remote.Image(repo.Tag(SignatureTag(d)), opts...)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []candidate
	for _, l := range m.Layers {
		if string(l.MediaType) != SimpleSigningMediaType {
			continue
		}
		if len(out) == maxSignatures {
			break
		}
		c := candidate{format: formatTag}
		sig, err := base64.StdEncoding.DecodeString(l.Annotations[SignatureAnnotation])
		if err != nil || len(sig) == 0 {
			c.sig = nil // checked as a bad signature
		} else {
			c.sig = sig
		}
		if cert := l.Annotations[CertificateAnnotation]; cert != "" {
			c.cert = []byte(cert)
			c.chain = []byte(l.Annotations[ChainAnnotation])
			c.rekor = []byte(l.Annotations[RekorBundleAnnotation])
		}
		if l.Size > maxPayloadBytes {
			c.payload = nil
			out = append(out, c)
			continue
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, err
		}
		rc, err := layer.Compressed()
		if err != nil {
			return nil, err
		}
		// Read to EOF: go-containerregistry checks the blob's digest there.
		data, err := io.ReadAll(io.LimitReader(rc, maxPayloadBytes+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("signature payload %s: %w", l.Digest, err)
		}
		if len(data) <= maxPayloadBytes {
			c.payload = data
		}
		out = append(out, c)
	}
	return out, nil
}

// checkTagSignature checks one tag-scheme signature of d. It returns the
// trusted signer when one of r's keys verifies it; (nil, "", nil) when
// none does (another signer's); an error when the signature is broken
// whoever made it: no signature, a payload that is not cosign's, or one
// that names another manifest or repository.
func (v *Verifier) checkTagSignature(t Target, r *Rule, d digest.Digest, c candidate) (*Signer, string, error) {
	if c.sig == nil {
		return nil, "", fmt.Errorf("no base64 signature in the %s annotation", SignatureAnnotation)
	}
	if c.payload == nil {
		return nil, "", fmt.Errorf("payload missing or over %d bytes", maxPayloadBytes)
	}
	var p payload.Cosign
	if err := p.UnmarshalJSON(c.payload); err != nil {
		return nil, "", fmt.Errorf("payload: %w", err)
	}
	if p.Image.DigestStr() != d.String() {
		return nil, "", fmt.Errorf("its payload is for manifest %s", p.Image.DigestStr())
	}
	if got := canonicalRepo(p.Image.Repository); got != t.Name {
		return nil, "", fmt.Errorf("its payload names repository %s, not %s", got, t.Name)
	}
	for _, k := range r.Keys {
		if verifyWithKey(k.Public, c.sig, c.payload) {
			return &Signer{Key: k.ID, Format: formatTag}, "", nil
		}
	}
	if c.cert != nil {
		if len(r.Identities) > 0 {
			return v.checkTagKeyless(r, c)
		}
		return nil, "a keyless signer", nil
	}
	return nil, "", nil
}

// canonicalRepo spells a repository as runclet stores names.
func canonicalRepo(repo name.Repository) string {
	return NormalizePrefix(repo.RegistryStr() + "/" + repo.RepositoryStr())
}

// verifyWithKey tries the key's default algorithm (P-384 with SHA-384,
// ...) and SHA-256, which cosign used for every key type.
func verifyWithKey(pub crypto.PublicKey, sig, data []byte) bool {
	var verifiers []signature.Verifier
	if v, err := signature.LoadDefaultVerifier(pub); err == nil {
		verifiers = append(verifiers, v)
	}
	if v, err := signature.LoadVerifier(pub, crypto.SHA256); err == nil {
		verifiers = append(verifiers, v)
	}
	for _, v := range verifiers {
		if v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(data)) == nil {
			return true
		}
	}
	return false
}
