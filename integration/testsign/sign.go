// Package testsign signs images in a registry the way cosign does, with
// sigstore's libraries: the tag scheme (sha256-<digest>.sig holding
// simple-signing payloads, signature in an annotation) and sigstore
// bundles attached as OCI 1.1 referrers. Tests, the signimage tool and
// the docs' walk-through use it; runclet itself only verifies.
package testsign

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Media types and annotations of cosign's tag scheme.
const (
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
)

// Signature is one entry of a .sig image: a payload and its signature.
type Signature struct {
	Payload   []byte
	Signature []byte
	// Annotations beyond the signature's (a keyless certificate, ...).
	Annotations map[string]string
}

// Payload is cosign's simple-signing payload for repo@d.
func Payload(repo name.Repository, d v1.Hash) ([]byte, error) {
	dg, err := name.NewDigest(repo.Name()+"@"+d.String(), name.Insecure)
	if err != nil {
		return nil, err
	}
	return payload.Cosign{Image: dg}.MarshalJSON()
}

// Signer loads a private key (ECDSA, Ed25519, RSA) as a sigstore signer
// with the key type's default algorithm.
func Signer(priv crypto.PrivateKey) (signature.Signer, error) {
	return signature.LoadDefaultSigner(priv)
}

// Sign makes a signature of repo@d with s.
func Sign(repo name.Repository, d v1.Hash, s signature.Signer) (Signature, error) {
	p, err := Payload(repo, d)
	if err != nil {
		return Signature{}, err
	}
	sig, err := s.SignMessage(bytes.NewReader(p))
	if err != nil {
		return Signature{}, err
	}
	return Signature{Payload: p, Signature: sig}, nil
}

// SigTag is the tag of d's signatures.
func SigTag(repo name.Repository, d v1.Hash) name.Tag {
	return repo.Tag(fmt.Sprintf("%s-%s.sig", d.Algorithm, d.Hex))
}

// Attach adds sigs to the signatures of repo@d (the tag scheme), keeping
// those already there, as `cosign sign` does.
func Attach(repo name.Repository, d v1.Hash, sigs []Signature, opts ...remote.Option) error {
	tag := SigTag(repo, d)
	base, err := remote.Image(tag, opts...)
	if err != nil {
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
			return fmt.Errorf("reading %s: %w", tag, err)
		}
		base = mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	}
	for _, s := range sigs {
		ann := map[string]string{SignatureAnnotation: base64.StdEncoding.EncodeToString(s.Signature)}
		for k, v := range s.Annotations {
			ann[k] = v
		}
		base, err = mutate.Append(base, mutate.Addendum{
			Layer:       static.NewLayer(s.Payload, SimpleSigningMediaType),
			Annotations: ann,
		})
		if err != nil {
			return err
		}
	}
	if err := remote.Write(tag, base, opts...); err != nil {
		return fmt.Errorf("writing %s: %w", tag, err)
	}
	return nil
}

// SignAndAttach signs repo@d with s and attaches the signature.
func SignAndAttach(repo name.Repository, d v1.Hash, s signature.Signer, opts ...remote.Option) error {
	sig, err := Sign(repo, d, s)
	if err != nil {
		return err
	}
	return Attach(repo, d, []Signature{sig}, opts...)
}
