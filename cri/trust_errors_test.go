package cri

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/runclet/runclet/runtime/image/trust"
)

// TestTrustRefusalIsPermissionDenied: a refusal by the image trust policy
// (also a failed precondition) reaches kubelet as PermissionDenied with
// the image, rule and reason in the message.
func TestTrustRefusalIsPermissionDenied(t *testing.T) {
	err := fmt.Errorf("pull x: %w", &trust.RefusedError{Image: "ghcr.io/acme/app:1", Rule: "ghcr.io/acme", Action: trust.Signed, Reason: trust.ReasonUnsigned})
	if c := Code(err); c != codes.PermissionDenied {
		t.Fatalf("code %v, want PermissionDenied", c)
	}
	msg := toStatus(err).Error()
	for _, want := range []string{"ghcr.io/acme/app:1", `trust rule "ghcr.io/acme"`, "unsigned"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("status %q does not name %q", msg, want)
		}
	}
}
