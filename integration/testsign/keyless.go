package testsign

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// BundleMediaType is a sigstore bundle's media type, also the artifact
// type of the OCI referrer carrying it.
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// statement is the in-toto statement cosign's bundles sign for an image:
// its subject is the manifest digest.
func statement(repo name.Repository, d v1.Hash) ([]byte, error) {
	return json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": repo.Name(), "digest": map[string]string{d.Algorithm: d.Hex}}},
		"predicateType": "https://sigstore.dev/cosign/sign/v1",
		"predicate":     map[string]any{},
	})
}

// KeylessBundle signs repo@d as identity subject from OIDC issuer with
// the virtual sigstore vs (a test Fulcio CA and transparency log): a
// v0.3 bundle holding the Fulcio certificate, a DSSE envelope over an
// in-toto statement naming d, and a log entry with its inclusion proof
// and signed entry timestamp.
func KeylessBundle(vs *ca.VirtualSigstore, subject, issuer string, repo name.Repository, d v1.Hash) ([]byte, error) {
	body, err := statement(repo, d)
	if err != nil {
		return nil, err
	}
	ent, err := vs.AttestAtTime(subject, issuer, body, time.Now().Add(5*time.Minute), true)
	if err != nil {
		return nil, err
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		return nil, err
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		return nil, err
	}
	env, ok := sc.(*bundle.Envelope)
	if !ok {
		return nil, fmt.Errorf("virtual sigstore made a %T, want a DSSE envelope", sc)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, err
	}
	pe := &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType}
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			return nil, err
		}
		pe.Signatures = append(pe.Signatures, &protodsse.Signature{Sig: sig, Keyid: s.KeyID})
	}
	entries, err := ent.TlogEntries()
	if err != nil {
		return nil, err
	}
	var tles []*protorekor.TransparencyLogEntry
	for _, e := range entries {
		tle := e.TransparencyLogEntry()
		// tlog.NewEntry leaves out the kind and the signed entry
		// timestamp, which a bundle carries: from the body, and signed
		// again by the virtual log.
		var kv struct {
			Kind       string `json:"kind"`
			APIVersion string `json:"apiVersion"`
		}
		if err := json.Unmarshal(tle.CanonicalizedBody, &kv); err != nil {
			return nil, err
		}
		tle.KindVersion = &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion}
		set, err := vs.RekorSignPayload(tlog.RekorPayload{
			Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), IntegratedTime: tle.IntegratedTime,
			LogIndex: tle.LogIndex, LogID: hex.EncodeToString(tle.LogId.KeyId),
		})
		if err != nil {
			return nil, err
		}
		tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
		tles = append(tles, tle)
	}
	pb := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries: tles,
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: pe},
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return nil, err
	}
	return b.MarshalJSON()
}

// TrustedRootJSON is vs's trusted root (its Fulcio CA, log and timestamp
// keys) as a trusted_root.json file.
func TrustedRootJSON(vs *ca.VirtualSigstore) ([]byte, error) {
	// The virtual sigstore keeps its log IDs as hex text; a trusted root
	// file holds them raw.
	rawIDs := func(logs map[string]*root.TransparencyLog) (map[string]*root.TransparencyLog, error) {
		out := map[string]*root.TransparencyLog{}
		for id, l := range logs {
			c := *l
			raw, err := hex.DecodeString(id)
			if err != nil {
				return nil, err
			}
			c.ID = raw
			out[id] = &c
		}
		return out, nil
	}
	rekor, err := rawIDs(vs.RekorLogs())
	if err != nil {
		return nil, err
	}
	ct, err := rawIDs(vs.CTLogs())
	if err != nil {
		return nil, err
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, vs.FulcioCertificateAuthorities(), ct, vs.TimestampingAuthorities(), rekor)
	if err != nil {
		return nil, err
	}
	return tr.MarshalJSON()
}

// AttachBundle attaches a bundle to repo@d as an OCI 1.1 referrer: an
// artifact manifest whose subject is d. Where the registry has no
// referrers API, go-containerregistry maintains the referrers tag
// (sha256-<hex>) instead.
func AttachBundle(repo name.Repository, d v1.Hash, bundleJSON []byte, opts ...remote.Option) error {
	subject, err := remote.Head(repo.Digest(d.String()), opts...)
	if err != nil {
		return fmt.Errorf("subject %s: %w", d, err)
	}
	art := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.MediaType(BundleMediaType)), types.OCIManifestSchema1)
	art, err = mutate.Append(art, mutate.Addendum{Layer: static.NewLayer(bundleJSON, types.MediaType(BundleMediaType))})
	if err != nil {
		return err
	}
	withSubject := mutate.Subject(art, *subject).(v1.Image)
	ad, err := withSubject.Digest()
	if err != nil {
		return err
	}
	if err := remote.Write(repo.Digest(ad.String()), withSubject, opts...); err != nil {
		return fmt.Errorf("attaching bundle to %s: %w", d, err)
	}
	return nil
}

// Annotations of cosign's keyless signatures in the tag scheme.
const (
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	RekorBundleAnnotation = "dev.sigstore.cosign/bundle"
)

// KeylessTagSignature signs repo@d keylessly for the tag scheme, as cosign
// does without --new-bundle-format: a simple-signing payload signed with
// a Fulcio certificate's key, the certificate and the Rekor entry (with
// its signed entry timestamp) in annotations.
func KeylessTagSignature(vs *ca.VirtualSigstore, subject, issuer string, repo name.Repository, d v1.Hash) (Signature, error) {
	p, err := Payload(repo, d)
	if err != nil {
		return Signature{}, err
	}
	ent, err := vs.Sign(subject, issuer, p)
	if err != nil {
		return Signature{}, err
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		return Signature{}, err
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		return Signature{}, err
	}
	certPEM, err := cryptoutils.MarshalCertificateToPEM(vc.Certificate())
	if err != nil {
		return Signature{}, err
	}
	entries, err := ent.TlogEntries()
	if err != nil || len(entries) != 1 {
		return Signature{}, fmt.Errorf("virtual sigstore log entries: %d, %v", len(entries), err)
	}
	tle := entries[0].TransparencyLogEntry()
	rp := tlog.RekorPayload{
		Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), IntegratedTime: tle.IntegratedTime,
		LogIndex: tle.LogIndex, LogID: hex.EncodeToString(tle.LogId.KeyId),
	}
	set, err := vs.RekorSignPayload(rp)
	if err != nil {
		return Signature{}, err
	}
	rekor, err := json.Marshal(map[string]any{"SignedEntryTimestamp": set, "Payload": rp})
	if err != nil {
		return Signature{}, err
	}
	return Signature{Payload: p, Signature: sc.Signature(), Annotations: map[string]string{
		CertificateAnnotation: string(certPEM),
		RekorBundleAnnotation: string(rekor),
	}}, nil
}
