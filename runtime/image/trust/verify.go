package trust

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/internal/errdefs"
)

// Status of a stored image's verification.
const (
	StatusVerified   = "verified"
	StatusUnverified = "unverified"
)

// Reasons, the label of the metrics and the class of a refusal.
const (
	ReasonKey              = "key"               // verified by a key
	ReasonKeyless          = "keyless"           // verified, keyless signers only or among them
	ReasonAcceptRule       = "accept-rule"       // unverified: the rule accepts without a check
	ReasonSkipped          = "skipped"           // unverified: --insecure-options=image
	ReasonImported         = "imported"          // unverified: image import without --verify
	ReasonRejected         = "rejected"          // refused: a reject rule
	ReasonNoRule           = "no-rule"           // refused: no rule covers it and the default rejects
	ReasonUnsigned         = "unsigned"          // refused: no signature at all
	ReasonWrongKey         = "wrong-key"         // refused: signatures, none verifying with a trusted key
	ReasonBadSignature     = "bad-signature"     // refused: a signature present that does not verify
	ReasonIdentityMismatch = "identity-mismatch" // refused: keyless signatures by other identities
	ReasonThreshold        = "threshold"         // refused: fewer distinct trusted signers than asked
)

// ErrRefused is the class of every refusal by the trust policy.
var ErrRefused = errors.New("refused by the image trust policy")

// RefusedError says which image a rule refused and why.
type RefusedError struct {
	Image  string // the reference as asked
	Rule   string // the rule's prefix, or "default"
	Action string
	Reason string // one of the Reason constants
	Detail string
	Hint   string
}

func (e *RefusedError) Error() string {
	msg := fmt.Sprintf("image %s refused by trust rule %q (%s): %s", e.Image, e.Rule, e.Action, e.Reason)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Unwrap makes a refusal both ErrRefused and a failed precondition.
func (e *RefusedError) Unwrap() []error { return []error{ErrRefused, errdefs.ErrFailedPrecondition} }

// Result is what a pull's verification found; the image store records it.
type Result struct {
	Status string `json:"status"` // StatusVerified or StatusUnverified
	Rule   string `json:"rule"`   // the rule's prefix, or "default"
	Action string `json:"action"`
	Reason string `json:"reason"`
	// Digest is the manifest the signatures are for (the index's when an
	// index was signed).
	Digest  string    `json:"digest,omitempty"`
	Signers []Signer  `json:"signers,omitempty"`
	Checked time.Time `json:"checked"`
}

// Signer is one trusted signer whose signature verified.
type Signer struct {
	Key     string `json:"key,omitempty"` // "SHA256:<hex>" of a trusted key
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Format is "cosign-tag" (sha256-<digest>.sig) or "sigstore-bundle"
	// (an OCI referrer).
	Format string `json:"format"`
}

func (s Signer) String() string {
	if s.Key != "" {
		return "key " + s.Key + " (" + s.Format + ")"
	}
	return "keyless " + s.Issuer + " " + s.Subject + " (" + s.Format + ")"
}

// Summary is a short form for tables: "key SHA256:ab12…", "keyless
// me@example.com", "no (accept-rule)".
func (r *Result) Summary() string {
	if r == nil {
		return "-"
	}
	if r.Status != StatusVerified {
		return "no (" + r.Reason + ")"
	}
	var parts []string
	for _, s := range r.Signers {
		if s.Key != "" {
			parts = append(parts, "key "+ShortID(s.Key))
		} else {
			parts = append(parts, "keyless "+s.Subject)
		}
	}
	return strings.Join(parts, ", ")
}

// Unverified is the result of a pull whose check was skipped, or of an
// import.
func Unverified(reason string) *Result {
	countResult(StatusUnverified, reason)
	return &Result{Status: StatusUnverified, Rule: "-", Action: "-", Reason: reason, Checked: time.Now().UTC()}
}

// Target is the image a pull is about to store.
type Target struct {
	// Name is the canonical repository, "host/path": what rules match and
	// what signatures must name, whichever endpoint serves the bytes.
	Name string
	// Ref is the reference as asked, for messages.
	Ref string
	// Digest is the manifest the reference resolved to (an index or an
	// image manifest).
	Digest digest.Digest
	// PlatformDigest is this platform's manifest when Digest is an index;
	// signatures of it count too.
	PlatformDigest digest.Digest
	// Repos are where signatures are looked for, in order: the endpoint
	// that served the image, then the canonical repository when that was
	// a mirror. The first that has any signature is used.
	Repos []Repo
}

// Repo is a repository and the options (transport, auth) to reach it.
type Repo struct {
	Repository name.Repository
	Options    []remote.Option
}

// Verifier checks targets against the live policy.
type Verifier struct {
	Source *Source
	// TrustedRoot is the sigstore trusted root file for keyless
	// signatures; read when a rule with identities needs it.
	TrustedRoot string

	rootMu sync.Mutex
	root   *trustedRoot
}

// Decide returns the rule for a name without fetching anything: the
// prefix ("default" for none) and the action.
func (v *Verifier) Decide(name string) (rule, action string, r *Rule, err error) {
	p, err := v.Source.Policy()
	if err != nil {
		return "", "", nil, errdefs.FailedPrecondition("%w", err)
	}
	if r := p.Match(name); r != nil {
		return r.Prefix, r.Action, r, nil
	}
	return "default", p.Default, nil, nil
}

// Precheck refuses, before anything is fetched, an image that a reject
// rule or a rejecting default covers.
func (v *Verifier) Precheck(ref, name string) error {
	rule, action, _, err := v.Decide(name)
	if err != nil {
		return err
	}
	if action == Reject {
		return v.refuse(&RefusedError{Image: ref, Rule: rule, Action: action, Reason: rejectReason(rule), Detail: rejectDetail(rule, name), Hint: rejectHint(rule, name)})
	}
	return nil
}

func rejectReason(rule string) string {
	if rule == "default" {
		return ReasonNoRule
	}
	return ReasonRejected
}

func rejectDetail(rule, name string) string {
	if rule == "default" {
		return "no trust rule covers " + name + " and the default refuses it"
	}
	return "the rule refuses every image under it"
}

func rejectHint(rule, name string) string {
	if rule != "default" {
		return ""
	}
	return fmt.Sprintf("trust its signers with `runclet trust add %s --key cosign.pub` (or --identity ISSUER SUBJECT), accept it unchecked with `runclet trust add %s --accept`, or skip the check for one command with --insecure-options=image", name, name)
}

// Verify applies the policy to t: nil error and a result to record, or a
// *RefusedError (class ErrRefused), or another error when signatures
// could not be fetched (the registry was unreachable: not a refusal).
func (v *Verifier) Verify(ctx context.Context, t Target) (*Result, error) {
	rule, action, r, err := v.Decide(t.Name)
	if err != nil {
		return nil, err
	}
	res := &Result{Rule: rule, Action: action, Checked: time.Now().UTC()}
	switch action {
	case Accept:
		res.Status, res.Reason = StatusUnverified, ReasonAcceptRule
		countResult(res.Status, res.Reason)
		return res, nil
	case Reject:
		return nil, v.refuse(&RefusedError{Image: t.Ref, Rule: rule, Action: action, Reason: rejectReason(rule), Detail: rejectDetail(rule, t.Name), Hint: rejectHint(rule, t.Name)})
	}
	ev, err := v.evaluate(ctx, t, r)
	if err != nil {
		countResult("error", "unavailable")
		return nil, err
	}
	if ev.refusal != nil {
		ev.refusal.Image, ev.refusal.Rule, ev.refusal.Action = t.Ref, rule, action
		return nil, v.refuse(ev.refusal)
	}
	res.Status, res.Digest, res.Signers = StatusVerified, ev.digest.String(), ev.signers
	res.Reason = ReasonKey
	for _, s := range ev.signers {
		if s.Key == "" {
			res.Reason = ReasonKeyless
		}
	}
	countResult(res.Status, res.Reason)
	return res, nil
}

func (v *Verifier) refuse(e *RefusedError) error {
	countResult("refused", e.Reason)
	slog.Warn("image refused by trust policy", "image", e.Image, "rule", e.Rule, "reason", e.Reason, "detail", e.Detail)
	return e
}

// evaluation is what the signatures of one target amount to.
type evaluation struct {
	digest  digest.Digest
	signers []Signer
	refusal *RefusedError
}

// candidate is one signature found for a digest, in either format.
type candidate struct {
	format string
	// tag scheme
	payload []byte
	sig     []byte
	cert    []byte // PEM, for keyless signatures in the tag scheme
	chain   []byte
	rekor   []byte // cosign's Rekor bundle: the log entry and its SET
	// bundles
	bundle []byte
}

// evaluate looks for signatures of the target's digest (then of its
// platform manifest) and checks them against rule r.
func (v *Verifier) evaluate(ctx context.Context, t Target, r *Rule) (*evaluation, error) {
	digests := []digest.Digest{t.Digest}
	if t.PlatformDigest != "" && t.PlatformDigest != t.Digest {
		digests = append(digests, t.PlatformDigest)
	}
	var last *evaluation
	found := false
	for _, d := range digests {
		cands, err := v.fetch(ctx, t, d)
		if err != nil {
			return nil, err
		}
		if len(cands) == 0 {
			continue
		}
		found = true
		ev := v.check(ctx, t, r, d, cands)
		if ev.refusal == nil || ev.refusal.Reason == ReasonBadSignature {
			return ev, nil
		}
		last = ev
	}
	if !found {
		return &evaluation{refusal: &RefusedError{Reason: ReasonUnsigned,
			Detail: fmt.Sprintf("no signature found for %s (looked for the cosign tag sha256-%s.sig and for sigstore bundles among its referrers)", t.Digest, t.Digest.Encoded()),
			Hint:   "sign it (see docs/images.md, \"Trust and signatures\"), or skip the check for one command with --insecure-options=image"}}, nil
	}
	return last, nil
}

// fetch gathers the signatures of d from the first of t.Repos that has
// any. Not found is no signature; other errors mean the registry could
// not say.
func (v *Verifier) fetch(ctx context.Context, t Target, d digest.Digest) ([]candidate, error) {
	for _, rp := range t.Repos {
		repo := rp.Repository
		opts := append([]remote.Option{remote.WithContext(ctx)}, rp.Options...)
		var cands []candidate
		tagged, err := fetchTagScheme(repo, d, opts)
		if err != nil {
			return nil, errdefs.Unavailable("looking for signatures of %s in %s: %w", t.Ref, repo, err)
		}
		cands = append(cands, tagged...)
		bundles, err := fetchBundles(repo, d, opts)
		if err != nil {
			return nil, errdefs.Unavailable("looking for signature bundles of %s in %s: %w", t.Ref, repo, err)
		}
		cands = append(cands, bundles...)
		if len(cands) > 0 {
			return cands, nil
		}
	}
	return nil, nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		if terr.StatusCode == http.StatusNotFound {
			return true
		}
		for _, d := range terr.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return true
			}
		}
	}
	return false
}

// check counts the distinct trusted signers among cands. A signature that
// is for another image, or that carries a certificate or log entry that
// does not verify, refuses the image whatever else verified.
func (v *Verifier) check(ctx context.Context, t Target, r *Rule, d digest.Digest, cands []candidate) *evaluation {
	ev := &evaluation{digest: d}
	seen := map[string]bool{}
	untrustedKeyed, otherIdentities := 0, []string{}
	for _, c := range cands {
		var signer *Signer
		var err error
		var identity string
		switch c.format {
		case formatTag:
			signer, identity, err = v.checkTagSignature(t, r, d, c)
		case formatBundle:
			signer, identity, err = v.checkBundle(r, d, c)
		}
		if err != nil {
			ev.refusal = &RefusedError{Reason: ReasonBadSignature, Detail: fmt.Sprintf("a %s signature of %s does not verify: %v", c.format, d, err)}
			return ev
		}
		switch {
		case signer != nil:
			id := signer.Key
			if id == "" {
				id = signer.Issuer + "\x00" + signer.Subject + "\x00" + identity
			}
			if !seen[id] {
				seen[id] = true
				ev.signers = append(ev.signers, *signer)
			}
		case identity != "":
			otherIdentities = append(otherIdentities, identity)
		default:
			untrustedKeyed++
		}
	}
	switch {
	case len(ev.signers) >= r.Threshold:
		return ev
	case len(ev.signers) > 0:
		ev.refusal = &RefusedError{Reason: ReasonThreshold, Detail: fmt.Sprintf("%d distinct trusted signer(s) of %s, the rule asks for %d", len(ev.signers), d, r.Threshold)}
	case len(otherIdentities) > 0 && untrustedKeyed == 0:
		ev.refusal = &RefusedError{Reason: ReasonIdentityMismatch, Detail: fmt.Sprintf("signed keylessly by %s, which the rule does not trust (it trusts %s)", strings.Join(otherIdentities, "; "), describeSigners(r))}
	default:
		ev.refusal = &RefusedError{Reason: ReasonWrongKey, Detail: fmt.Sprintf("%d signature(s) of %s, none verifying with a trusted key or identity (%s): signed by another key, or altered", len(cands), d, describeSigners(r))}
	}
	return ev
}

func describeSigners(r *Rule) string {
	var parts []string
	for _, k := range r.Keys {
		parts = append(parts, "key "+ShortID(k.ID))
	}
	for _, id := range r.Identities {
		parts = append(parts, "identity "+id.String())
	}
	return strings.Join(parts, ", ")
}
