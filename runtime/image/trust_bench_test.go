package image

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"github.com/runclet/runclet/internal/testutil"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/integration/testsign"
	"github.com/runclet/runclet/runtime/config"
	"github.com/runclet/runclet/runtime/image/trust"
)

// BenchmarkPullTrust pulls the same image into an empty store without a
// policy, under an accept rule, verified by a key (tag scheme) and
// keylessly (a sigstore bundle through the referrers API), for a small
// image (one 64 KiB layer) and BenchmarkPull's 3 x 16 MiB one ("large"): the
// verification's cost, side by side with the unverified pull.
//
//	go test -run '^$' -bench BenchmarkPullTrust -benchtime 20x ./runtime/image/
func BenchmarkPullTrust(b *testing.B) {
	testutil.RequiresRoot(b, "runclet unpacks images with their owners and device nodes")
	reg := testregistry.StartTBWithReferrers(b)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		b.Fatal(err)
	}
	signer, err := testsign.Signer(priv)
	if err != nil {
		b.Fatal(err)
	}
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		b.Fatal(err)
	}
	rootFile := filepath.Join(b.TempDir(), "trusted_root.json")
	rootJSON, err := testsign.TrustedRootJSON(vs)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(rootFile, rootJSON, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, size := range []struct {
		name          string
		layers        int
		bytesPerLayer int64
	}{{"small", 1, 64 << 10}, {"large", 3, 16 << 20}} {
		src, err := testimage.Random(size.layers, size.bytesPerLayer)
		if err != nil {
			b.Fatal(err)
		}
		repoName := "bench/" + size.name
		d, err := reg.Push(repoName+":1", src)
		if err != nil {
			b.Fatal(err)
		}
		repo, err := name.NewRepository(reg.Host()+"/"+repoName, name.Insecure)
		if err != nil {
			b.Fatal(err)
		}
		if err := testsign.SignAndAttach(repo, d, signer); err != nil {
			b.Fatal(err)
		}
		bundle, err := testsign.KeylessBundle(vs, "dev@example.com", "https://issuer.example", repo, d)
		if err != nil {
			b.Fatal(err)
		}
		if err := testsign.AttachBundle(repo, d, bundle); err != nil {
			b.Fatal(err)
		}
		ref := repo.Name() + ":1"
		prefix := reg.Host() + "/bench"
		for _, mode := range []struct {
			name  string
			rules []config.TrustRule
		}{
			{"unverified", nil},
			{"accept", []config.TrustRule{{Prefix: prefix, Action: trust.Accept}}},
			{"keyed", []config.TrustRule{{Prefix: prefix, Action: trust.Signed, Keys: []string{string(pub)}}}},
			{"keyless", []config.TrustRule{{Prefix: prefix, Action: trust.Signed, Identities: []config.TrustIdentity{{Issuer: "https://issuer.example", Subject: "dev@example.com"}}}}},
		} {
			if mode.rules != nil && size.name == "small" {
				// The check alone, as a pull makes it after resolving
				// the manifest: fetch the signatures, verify them.
				b.Run("check-only/"+mode.name, func(b *testing.B) {
					v := &trust.Verifier{
						Source:      trust.NewSource(config.Trust{Default: trust.Reject, Rules: mode.rules}, filepath.Join(b.TempDir(), "trust.toml")),
						TrustedRoot: rootFile,
					}
					t := trust.Target{Name: repo.Name(), Ref: ref, Digest: digest.Digest(d.String()), Repos: []trust.Repo{{Repository: repo}}}
					for i := 0; i < b.N; i++ {
						if _, err := v.Verify(context.Background(), t); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
			b.Run(fmt.Sprintf("%s/%s", size.name, mode.name), func(b *testing.B) {
				b.SetBytes(wantPullSize(b, src))
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					dir := b.TempDir()
					opts := Options{}
					if mode.rules != nil {
						opts.Trust = &trust.Verifier{
							Source:      trust.NewSource(config.Trust{Default: trust.Reject, Rules: mode.rules}, filepath.Join(dir, "trust.toml")),
							TrustedRoot: rootFile,
						}
					}
					s, err := Open(dir, opts)
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					img, err := s.Pull(context.Background(), ref, PullOptions{})
					if err != nil {
						b.Fatal(err)
					}
					if mode.name == "keyed" || mode.name == "keyless" {
						if img.Verification == nil || img.Verification.Status != trust.StatusVerified {
							b.Fatalf("not verified: %+v", img.Verification)
						}
					}
				}
			})
		}
	}
}
