package image

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"github.com/runclet/runclet/internal/testutil"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/integration/testsign"
	"github.com/runclet/runclet/runtime/config"
	"github.com/runclet/runclet/runtime/image/trust"
)

type trustEnv struct {
	t    *testing.T
	reg  *testregistry.Registry
	keys map[string]crypto.Signer
	// root is the trusted root file for keyless signatures, if any.
	root string
}

func newTrustEnv(t *testing.T) *trustEnv {
	testutil.RequiresRoot(t, "runclet unpacks images with their owners and device nodes")
	p256 := must[*ecdsa.PrivateKey](t)(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	p384 := must[*ecdsa.PrivateKey](t)(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs := must[*rsa.PrivateKey](t)(rsa.GenerateKey(rand.Reader, 2048))
	other := must[*ecdsa.PrivateKey](t)(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	return &trustEnv{t: t, reg: testregistry.StartTB(t),
		keys: map[string]crypto.Signer{"p256": p256, "p384": p384, "ed25519": ed, "rsa": rs, "other": other}}
}

func (e *trustEnv) pem(key string) string {
	return string(must[[]byte](e.t)(cryptoutils.MarshalPublicKeyToPEM(e.keys[key].Public())))
}

func (e *trustEnv) keyID(key string) string {
	return must[trust.Key](e.t)(trust.LoadKey(e.pem(key), "")).ID
}

// store opens a store whose policy has rules (the default rejects).
func (e *trustEnv) store(rules []config.TrustRule, regs map[string]config.Registry) *Store {
	e.t.Helper()
	dir := e.t.TempDir()
	cfg := config.Trust{Default: trust.Reject, Rules: rules}
	v := &trust.Verifier{Source: trust.NewSource(cfg, filepath.Join(dir, "trust.toml")), TrustedRoot: e.root}
	s, err := Open(dir, Options{Registries: regs, Trust: v})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// push pushes a small random image as repoTag and returns its repository
// and manifest digest.
func (e *trustEnv) push(repoTag string) (name.Repository, v1.Hash) {
	e.t.Helper()
	d := must[v1.Hash](e.t)(e.reg.Push(repoTag, uniqueImage(e.t)))
	repo := must[name.Repository](e.t)(name.NewRepository(e.reg.Host()+"/"+strings.Split(repoTag, ":")[0], name.Insecure))
	return repo, d
}

func (e *trustEnv) signer(key string) signature.Signer {
	return must[signature.Signer](e.t)(testsign.Signer(e.keys[key]))
}

func (e *trustEnv) sign(repo name.Repository, d v1.Hash, key string) {
	e.t.Helper()
	if err := testsign.SignAndAttach(repo, d, e.signer(key)); err != nil {
		e.t.Fatal(err)
	}
}

var uniqueN int

// uniqueImage is a small image no other call returns (testimage.Random
// is the same image every time).
func uniqueImage(t testing.TB) v1.Image {
	t.Helper()
	uniqueN++
	base := must[v1.Image](t)(testimage.Random(1, 2048))
	cf := must[*v1.ConfigFile](t)(base.ConfigFile())
	cf = cf.DeepCopy()
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	cf.Config.Labels["org.runclet.test.unique"] = fmt.Sprintf("%d-%d", time.Now().UnixNano(), uniqueN)
	return must[v1.Image](t)(mutate.ConfigFile(base, cf))
}

// refused checks that pulling ref is refused for reason, and that the
// store holds nothing afterwards.
func refused(t *testing.T, s *Store, ref, reason string) *trust.RefusedError {
	t.Helper()
	_, err := s.Pull(context.Background(), ref, PullOptions{})
	var re *trust.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("pull %s: %v, want a refusal (%s)", ref, err, reason)
	}
	if re.Reason != reason {
		t.Fatalf("pull %s refused for %q, want %q: %v", ref, re.Reason, reason, err)
	}
	if !errors.Is(err, trust.ErrRefused) {
		t.Fatalf("refusal is not ErrRefused: %v", err)
	}
	if imgs := must[[]Image](t)(s.List()); len(imgs) != 0 {
		t.Fatalf("refused pull left images %v", imgs)
	}
	for _, sub := range []string{"blobs/sha256", "ingest", "layers/sha256", "layers/tmp"} {
		if left := entries(t, s, sub); len(left) != 0 {
			t.Fatalf("refused pull left %s/%v", sub, left)
		}
	}
	return re
}

func TestTrustKeyedSignaturesAllKeyTypes(t *testing.T) {
	e := newTrustEnv(t)
	for _, kt := range []string{"p256", "p384", "ed25519", "rsa"} {
		t.Run(kt, func(t *testing.T) {
			repo, d := e.push("signed/" + kt + ":v1")
			e.sign(repo, d, kt)
			s := e.store([]config.TrustRule{{Prefix: e.reg.Host() + "/signed", Action: trust.Signed, Keys: []string{e.pem(kt)}}}, nil)
			img, err := s.Pull(context.Background(), repo.Name()+":v1", PullOptions{})
			if err != nil {
				t.Fatal(err)
			}
			v := img.Verification
			if v == nil || v.Status != trust.StatusVerified || len(v.Signers) != 1 || v.Signers[0].Key != e.keyID(kt) || v.Digest != d.String() {
				t.Fatalf("verification recorded: %+v", v)
			}
			// Recorded in the store, not only returned.
			got := must[Image](t)(s.Get(repo.Name() + ":v1"))
			if got.Verification == nil || got.Verification.Rule != e.reg.Host()+"/signed" {
				t.Fatalf("stored verification %+v", got.Verification)
			}
			// Signed by another key only: refused.
			s2 := e.store([]config.TrustRule{{Prefix: e.reg.Host() + "/signed", Action: trust.Signed, Keys: []string{e.pem("other")}}}, nil)
			refused(t, s2, repo.Name()+":v1", trust.ReasonWrongKey)
		})
	}
}

func TestTrustRefusals(t *testing.T) {
	e := newTrustEnv(t)
	host := e.reg.Host()
	rule := func(prefix string) []config.TrustRule {
		return []config.TrustRule{{Prefix: prefix, Action: trust.Signed, Keys: []string{e.pem("p256")}}}
	}

	t.Run("unsigned", func(t *testing.T) {
		repo, _ := e.push("r/unsigned:v1")
		refused(t, e.store(rule(host+"/r"), nil), repo.Name()+":v1", trust.ReasonUnsigned)
	})
	t.Run("no rule, default rejects", func(t *testing.T) {
		repo, d := e.push("norule/app:v1")
		e.sign(repo, d, "p256")
		re := refused(t, e.store(rule(host+"/r"), nil), repo.Name()+":v1", trust.ReasonNoRule)
		if !strings.Contains(re.Error(), "runclet trust add "+host+"/norule/app") || !strings.Contains(re.Error(), "--insecure-options=image") {
			t.Fatalf("refusal does not say how to trust or skip: %v", re)
		}
	})
	t.Run("reject rule, even when signed", func(t *testing.T) {
		repo, d := e.push("bad/app:v1")
		e.sign(repo, d, "p256")
		rules := append(rule(host), config.TrustRule{Prefix: host + "/bad", Action: trust.Reject})
		e.reg.ResetRequests()
		refused(t, e.store(rules, nil), repo.Name()+":v1", trust.ReasonRejected)
		if n := e.reg.Requests("/v2/bad/"); n != 0 {
			t.Fatalf("a rejected image was fetched: %d requests", n)
		}
	})
	t.Run("longest prefix wins", func(t *testing.T) {
		repo, d := e.push("lp/team/app:v1")
		e.sign(repo, d, "other")
		rules := []config.TrustRule{
			{Prefix: host, Action: trust.Reject},
			{Prefix: host + "/lp", Action: trust.Signed, Keys: []string{e.pem("p256")}},
			{Prefix: host + "/lp/team", Action: trust.Signed, Keys: []string{e.pem("other")}},
		}
		s := e.store(rules, nil)
		img, err := s.Pull(context.Background(), repo.Name()+":v1", PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img.Verification.Rule != host+"/lp/team" {
			t.Fatalf("decided by %q", img.Verification.Rule)
		}
		refused(t, e.store(rules[:2], nil), repo.Name()+":v1", trust.ReasonWrongKey)
	})
	t.Run("tampered signature", func(t *testing.T) {
		repo, d := e.push("r/tsig:v1")
		sig := must[testsign.Signature](t)(testsign.Sign(repo, d, e.signer("p256")))
		sig.Signature[len(sig.Signature)/2] ^= 0x40
		if err := testsign.Attach(repo, d, []testsign.Signature{sig}); err != nil {
			t.Fatal(err)
		}
		refused(t, e.store(rule(host+"/r"), nil), repo.Name()+":v1", trust.ReasonWrongKey)
	})
	t.Run("tampered payload", func(t *testing.T) {
		repo, d := e.push("r/tpayload:v1")
		sig := must[testsign.Signature](t)(testsign.Sign(repo, d, e.signer("p256")))
		// Same digest, one more claim: the signature no longer covers it.
		sig.Payload = []byte(strings.Replace(string(sig.Payload), `"optional":null`, `"optional":{"x":"y"}`, 1))
		if err := testsign.Attach(repo, d, []testsign.Signature{sig}); err != nil {
			t.Fatal(err)
		}
		refused(t, e.store(rule(host+"/r"), nil), repo.Name()+":v1", trust.ReasonWrongKey)
	})
	t.Run("payload for another manifest digest", func(t *testing.T) {
		repo, d := e.push("r/tdigest:v1")
		_, other := e.push("r/tdigest-other:v1")
		// A valid signature by the trusted key, of another manifest,
		// filed under this manifest's signature tag.
		sig := must[testsign.Signature](t)(testsign.Sign(repo, other, e.signer("p256")))
		good := must[testsign.Signature](t)(testsign.Sign(repo, d, e.signer("p256")))
		if err := testsign.Attach(repo, d, []testsign.Signature{good, sig}); err != nil {
			t.Fatal(err)
		}
		// It does not verify, so it refuses although a good one is there.
		refused(t, e.store(rule(host+"/r"), nil), repo.Name()+":v1", trust.ReasonBadSignature)
	})
	t.Run("payload for another repository", func(t *testing.T) {
		repo, d := e.push("r/trepo:v1")
		elsewhere := must[name.Repository](t)(name.NewRepository(host+"/r/elsewhere", name.Insecure))
		sig := must[testsign.Signature](t)(testsign.Sign(elsewhere, d, e.signer("p256")))
		if err := testsign.Attach(repo, d, []testsign.Signature{sig}); err != nil {
			t.Fatal(err)
		}
		refused(t, e.store(rule(host+"/r"), nil), repo.Name()+":v1", trust.ReasonBadSignature)
	})
	t.Run("tag moved to an unsigned manifest", func(t *testing.T) {
		repo, d := e.push("r/moved:v1")
		e.sign(repo, d, "p256")
		e.push("r/moved:v1") // another image under the same tag
		refused(t, e.store(rule(host+"/r"), nil), repo.Name()+":v1", trust.ReasonUnsigned)
	})
	t.Run("threshold", func(t *testing.T) {
		repo, d := e.push("r/two:v1")
		e.sign(repo, d, "p256")
		rules := []config.TrustRule{{Prefix: host + "/r", Action: trust.Signed, Keys: []string{e.pem("p256"), e.pem("ed25519"), e.pem("rsa")}, Threshold: 2}}
		refused(t, e.store(rules, nil), repo.Name()+":v1", trust.ReasonThreshold)
		e.sign(repo, d, "ed25519")
		img, err := e.store(rules, nil).Pull(context.Background(), repo.Name()+":v1", PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(img.Verification.Signers); n != 2 {
			t.Fatalf("%d signers recorded, want 2", n)
		}
	})
}

func TestTrustDigestPinnedAndSkip(t *testing.T) {
	e := newTrustEnv(t)
	host := e.reg.Host()
	rules := []config.TrustRule{{Prefix: host + "/p", Action: trust.Signed, Keys: []string{e.pem("p256")}}}
	signed, sd := e.push("p/signed:v1")
	e.sign(signed, sd, "p256")
	unsigned, ud := e.push("p/unsigned:v1")

	s := e.store(rules, nil)
	img, err := s.Pull(context.Background(), signed.Name()+"@"+sd.String(), PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Verification.Status != trust.StatusVerified {
		t.Fatalf("digest pull verification %+v", img.Verification)
	}
	refused(t, e.store(rules, nil), unsigned.Name()+"@"+ud.String(), trust.ReasonUnsigned)

	// --insecure-options=image: pulled, recorded as unverified.
	img, err = s.Pull(context.Background(), unsigned.Name()+"@"+ud.String(), PullOptions{SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if v := img.Verification; v == nil || v.Status != trust.StatusUnverified || v.Reason != trust.ReasonSkipped {
		t.Fatalf("skipped pull recorded %+v", v)
	}
	// An accept rule pulls unsigned images, recorded as unverified.
	acc := e.store([]config.TrustRule{{Prefix: host + "/p/unsigned", Action: trust.Accept}}, nil)
	img, err = acc.Pull(context.Background(), unsigned.Name()+":v1", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v := img.Verification; v == nil || v.Reason != trust.ReasonAcceptRule {
		t.Fatalf("accepted pull recorded %+v", v)
	}
}

// TestTrustMirror: the signature is for the image's canonical name,
// wherever its bytes come from. A mirror that serves the image but not
// its signature: the signature is read from the registry itself. A mirror
// serving another (unsigned) image under the tag is refused.
func TestTrustMirror(t *testing.T) {
	e := newTrustEnv(t)
	upstream := e.reg
	mirror := testregistry.StartTB(t)
	img := uniqueImage(t)
	d := must[v1.Hash](t)(upstream.Push("m/app:v1", img))
	must[v1.Hash](t)(mirror.Push("m/app:v1", img))
	repo := must[name.Repository](t)(name.NewRepository(upstream.Host()+"/m/app", name.Insecure))
	e.sign(repo, d, "p256")
	regs := map[string]config.Registry{upstream.Host(): {Mirrors: []string{"http://" + mirror.Host()}}}
	rules := []config.TrustRule{{Prefix: upstream.Host() + "/m", Action: trust.Signed, Keys: []string{e.pem("p256")}}}

	s := e.store(rules, regs)
	mirror.ResetRequests()
	got, err := s.Pull(context.Background(), repo.Name()+":v1", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mirror.Requests("/blobs/") == 0 {
		t.Fatal("the mirror served no blob: the test does not test a mirror")
	}
	if got.Verification.Status != trust.StatusVerified {
		t.Fatalf("verification %+v", got.Verification)
	}

	// The mirror now serves a different image under the tag.
	must[v1.Hash](t)(mirror.Push("m/app:v1", uniqueImage(t)))
	refused(t, e.store(rules, regs), repo.Name()+":v1", trust.ReasonUnsigned)
}

// TestTrustKeylessBundles: sigstore bundles attached as OCI referrers,
// through the referrers API and through its tag-schema fallback, signed
// with a test Fulcio CA and transparency log (sigstore-go's virtual
// sigstore) and checked against a trusted_root.json on disk.
func TestTrustKeylessBundles(t *testing.T) {
	testutil.RequiresRoot(t, "runclet unpacks images with their owners and device nodes")
	vs := must[*ca.VirtualSigstore](t)(ca.NewVirtualSigstore())
	rogue := must[*ca.VirtualSigstore](t)(ca.NewVirtualSigstore())
	rootFile := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(rootFile, must[[]byte](t)(testsign.TrustedRootJSON(vs)), 0o644); err != nil {
		t.Fatal(err)
	}
	const issuer, subject = "https://issuer.example", "dev@example.com"
	for _, api := range []string{"referrers API", "referrers tag schema"} {
		t.Run(api, func(t *testing.T) {
			e := newTrustEnv(t)
			if api == "referrers API" {
				e.reg = testregistry.StartTBWithReferrers(t)
			}
			e.root = rootFile
			host := e.reg.Host()
			attach := func(repo name.Repository, d v1.Hash, by *ca.VirtualSigstore, subj string, forDigest v1.Hash) {
				t.Helper()
				b := must[[]byte](t)(testsign.KeylessBundle(by, subj, issuer, repo, forDigest))
				if err := testsign.AttachBundle(repo, d, b); err != nil {
					t.Fatal(err)
				}
			}
			rule := func(ids ...config.TrustIdentity) []config.TrustRule {
				return []config.TrustRule{{Prefix: host + "/k", Action: trust.Signed, Identities: ids}}
			}
			right := config.TrustIdentity{Issuer: issuer, Subject: subject}

			repo, d := e.push("k/app:v1")
			attach(repo, d, vs, subject, d)
			e.reg.ResetRequests()
			img, err := e.store(rule(right), nil).Pull(context.Background(), repo.Name()+":v1", PullOptions{})
			if err != nil {
				t.Fatal(err)
			}
			v := img.Verification
			if v.Status != trust.StatusVerified || v.Reason != trust.ReasonKeyless || len(v.Signers) != 1 || v.Signers[0].Subject != subject || v.Signers[0].Issuer != issuer || v.Signers[0].Format != "sigstore-bundle" {
				t.Fatalf("verification %+v", v)
			}
			if api == "referrers API" && e.reg.Requests("/referrers/") == 0 {
				t.Fatal("the referrers API was not used")
			}
			// By regexp too.
			if _, err := e.store(rule(config.TrustIdentity{IssuerRegexp: `^https://issuer\.`, SubjectRegexp: `@example\.com$`}), nil).Pull(context.Background(), repo.Name()+":v1", PullOptions{}); err != nil {
				t.Fatalf("regexp identity: %v", err)
			}
			refused(t, e.store(rule(config.TrustIdentity{Issuer: issuer, Subject: "someone@example.com"}), nil), repo.Name()+":v1", trust.ReasonIdentityMismatch)
			refused(t, e.store(rule(config.TrustIdentity{Issuer: "https://other-issuer.example", Subject: subject}), nil), repo.Name()+":v1", trust.ReasonIdentityMismatch)
			// A key-only rule does not trust keyless signers.
			refused(t, e.store([]config.TrustRule{{Prefix: host + "/k", Action: trust.Signed, Keys: []string{e.pem("p256")}}}, nil), repo.Name()+":v1", trust.ReasonIdentityMismatch)

			// Issued by a CA the trusted root does not hold: broken.
			rrepo, rd := e.push("k/rogue:v1")
			attach(rrepo, rd, rogue, subject, rd)
			refused(t, e.store(rule(right), nil), rrepo.Name()+":v1", trust.ReasonBadSignature)

			// A genuine bundle for another digest, attached here: broken.
			orepo, od := e.push("k/other:v1")
			_, elsewhere := e.push("k/elsewhere:v1")
			attach(orepo, od, vs, subject, elsewhere)
			refused(t, e.store(rule(right), nil), orepo.Name()+":v1", trust.ReasonBadSignature)
		})
	}
}

// TestTrustKeylessTagScheme: cosign's keyless signatures in the tag scheme
// (certificate and Rekor entry with its signed entry timestamp in
// annotations), the format most keyless-signed images carry today.
func TestTrustKeylessTagScheme(t *testing.T) {
	e := newTrustEnv(t)
	vs := must[*ca.VirtualSigstore](t)(ca.NewVirtualSigstore())
	rogue := must[*ca.VirtualSigstore](t)(ca.NewVirtualSigstore())
	e.root = filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(e.root, must[[]byte](t)(testsign.TrustedRootJSON(vs)), 0o644); err != nil {
		t.Fatal(err)
	}
	const issuer, subject = "https://issuer.example", "ci@example.com"
	host := e.reg.Host()
	rule := func(id config.TrustIdentity) []config.TrustRule {
		return []config.TrustRule{{Prefix: host + "/t", Action: trust.Signed, Identities: []config.TrustIdentity{id}}}
	}
	signWith := func(repo name.Repository, d v1.Hash, by *ca.VirtualSigstore) testsign.Signature {
		return must[testsign.Signature](t)(testsign.KeylessTagSignature(by, subject, issuer, repo, d))
	}

	repo, d := e.push("t/app:v1")
	if err := testsign.Attach(repo, d, []testsign.Signature{signWith(repo, d, vs)}); err != nil {
		t.Fatal(err)
	}
	img, err := e.store(rule(config.TrustIdentity{Issuer: issuer, Subject: subject}), nil).Pull(context.Background(), repo.Name()+":v1", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v := img.Verification; v.Status != trust.StatusVerified || len(v.Signers) != 1 || v.Signers[0].Subject != subject || v.Signers[0].Format != "cosign-tag" {
		t.Fatalf("verification %+v", v)
	}
	refused(t, e.store(rule(config.TrustIdentity{Issuer: issuer, Subject: "other@example.com"}), nil), repo.Name()+":v1", trust.ReasonIdentityMismatch)

	// From a CA the trusted root does not hold: broken.
	rrepo, rd := e.push("t/rogue:v1")
	if err := testsign.Attach(rrepo, rd, []testsign.Signature{signWith(rrepo, rd, rogue)}); err != nil {
		t.Fatal(err)
	}
	refused(t, e.store(rule(config.TrustIdentity{Issuer: issuer, Subject: subject}), nil), rrepo.Name()+":v1", trust.ReasonBadSignature)

	// The signed entry timestamp altered: broken.
	trepo, td := e.push("t/tampered:v1")
	sig := signWith(trepo, td, vs)
	sig.Annotations[testsign.RekorBundleAnnotation] = strings.Replace(sig.Annotations[testsign.RekorBundleAnnotation], `"logIndex":1000`, `"logIndex":1001`, 1)
	if err := testsign.Attach(trepo, td, []testsign.Signature{sig}); err != nil {
		t.Fatal(err)
	}
	refused(t, e.store(rule(config.TrustIdentity{Issuer: issuer, Subject: subject}), nil), trepo.Name()+":v1", trust.ReasonBadSignature)
}

// TestTrustIndex: a multi-platform index is verified by the index's
// signatures, or, when it has none, by this platform's manifest's.
func TestTrustIndex(t *testing.T) {
	e := newTrustEnv(t)
	host := e.reg.Host()
	idx := must[v1.ImageIndex](t)(testimage.Index())
	rules := []config.TrustRule{{Prefix: host + "/i", Action: trust.Signed, Keys: []string{e.pem("p256")}}}
	im := must[*v1.IndexManifest](t)(idx.IndexManifest())
	var platform v1.Hash
	for _, m := range im.Manifests {
		if m.Platform != nil && m.Platform.Architecture == runtime.GOARCH {
			platform = m.Digest
		}
	}
	if platform.Hex == "" {
		t.Fatal("the test index has no manifest for this architecture")
	}

	// Signed index.
	d := must[v1.Hash](t)(e.reg.PushIndex("i/signed:v1", idx))
	repo := must[name.Repository](t)(name.NewRepository(host+"/i/signed", name.Insecure))
	e.sign(repo, d, "p256")
	img, err := e.store(rules, nil).Pull(context.Background(), repo.Name()+":v1", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Verification.Digest != d.String() {
		t.Fatalf("verified %s, want the index %s", img.Verification.Digest, d)
	}

	// Only this platform's manifest signed.
	must[v1.Hash](t)(e.reg.PushIndex("i/platform:v1", idx))
	prepo := must[name.Repository](t)(name.NewRepository(host+"/i/platform", name.Insecure))
	refused(t, e.store(rules, nil), prepo.Name()+":v1", trust.ReasonUnsigned)
	e.sign(prepo, platform, "p256")
	img, err = e.store(rules, nil).Pull(context.Background(), prepo.Name()+":v1", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Verification.Digest != platform.String() {
		t.Fatalf("verified %s, want the platform manifest %s", img.Verification.Digest, platform)
	}
}
