package trust

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/config"
)

// TestMetricsCountByResultAndReason: decisions that need no registry are
// counted under their result and reason.
func TestMetricsCountByResultAndReason(t *testing.T) {
	v := &Verifier{Source: NewSource(config.Trust{Default: Reject, Rules: []config.TrustRule{
		{Prefix: "ok.io", Action: Accept}, {Prefix: "bad.io", Action: Reject},
	}}, filepath.Join(t.TempDir(), "trust.toml"))}
	get := func(result, reason string) float64 {
		return testutil.ToFloat64(verifications.WithLabelValues(result, reason))
	}
	acc, rej, none, skip := get(StatusUnverified, ReasonAcceptRule), get("refused", ReasonRejected), get("refused", ReasonNoRule), get(StatusUnverified, ReasonSkipped)

	if res, err := v.Verify(context.Background(), Target{Name: "ok.io/app", Ref: "ok.io/app:1"}); err != nil || res.Reason != ReasonAcceptRule {
		t.Fatalf("accept: %+v %v", res, err)
	}
	if _, err := v.Verify(context.Background(), Target{Name: "bad.io/app", Ref: "bad.io/app:1"}); err == nil {
		t.Fatal("reject rule verified")
	}
	if err := v.Precheck("other.io/app:1", "other.io/app"); err == nil {
		t.Fatal("no rule, default reject: precheck passed")
	}
	Unverified(ReasonSkipped)
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"accept", get(StatusUnverified, ReasonAcceptRule), acc + 1},
		{"rejected", get("refused", ReasonRejected), rej + 1},
		{"no-rule", get("refused", ReasonNoRule), none + 1},
		{"skipped", get(StatusUnverified, ReasonSkipped), skip + 1},
	} {
		if c.got != c.want {
			t.Errorf("%s counted %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestUnreachableSignaturesAreNotARefusal: when the registry cannot be
// asked for signatures, the pull fails as Unavailable (retryable), not
// as a refusal that would claim the image is unsigned.
func TestUnreachableSignaturesAreNotARefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	k, err := LoadKey(pubPEM(t, testKeys(t)["p256"].Public()), "")
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Source: NewSource(config.Trust{Default: Reject, Rules: []config.TrustRule{
		{Prefix: addr, Action: Signed, Keys: []string{k.Spec}},
	}}, filepath.Join(t.TempDir(), "trust.toml"))}
	repo, err := name.NewRepository(addr+"/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), Target{Name: addr + "/app", Ref: addr + "/app:1",
		Digest: digest.FromString("x"), Repos: []Repo{{Repository: repo, Options: []remote.Option{remote.WithRetryBackoff(remote.Backoff{Steps: 1})}}}})
	if err == nil || errors.Is(err, ErrRefused) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("unreachable registry: %v, want Unavailable and no refusal", err)
	}
}
