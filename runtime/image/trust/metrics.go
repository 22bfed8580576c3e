package trust

import "github.com/prometheus/client_golang/prometheus"

var verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "runclet_image_verifications_total",
	Help: "Image pulls checked against the trust policy, by result (verified, refused, unverified, error) and reason (key, keyless; unsigned, wrong-key, bad-signature, identity-mismatch, threshold, rejected, no-rule; accept-rule, skipped, imported; unavailable).",
}, []string{"result", "reason"})

func countResult(result, reason string) { verifications.WithLabelValues(result, reason).Inc() }

// Collector is the verification counters, for the daemon's registry.
func Collector() prometheus.Collector { return verifications }
