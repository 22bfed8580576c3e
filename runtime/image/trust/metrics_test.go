package trust

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
