package config

import (
	"fmt"
	"path/filepath"
)

// Trust is the image trust policy: which registry/repository prefixes
// must be signed, and by whom. runtime/image/trust evaluates it; the
// policy file it names is re-read when it changes.
type Trust struct {
	// Default is the action for an image no rule's prefix covers:
	// "reject" or "accept".
	Default string `toml:"default"`
	// PolicyFile holds rules `runclet trust add` writes; its rules come
	// on top of Rules (the file wins on an equal prefix). "" is
	// trust.toml beside the configuration file.
	PolicyFile string `toml:"policy_file"`
	// TrustedRoot is a sigstore trusted_root.json (Fulcio CAs,
	// transparency log keys) for keyless signatures, read offline.
	// "" is trusted_root.json beside the policy file.
	TrustedRoot string `toml:"trusted_root"`
	// Rules are the configuration file's own rules.
	Rules []TrustRule `toml:"rules"`
}

// TrustRule is one rule: images whose name starts with Prefix (at a path
// boundary) get Action.
type TrustRule struct {
	Prefix string `toml:"prefix"`
	// Action is "accept" (no check), "signed" or "reject".
	Action string `toml:"action"`
	// Keys are public keys in PEM, inline or as a file path.
	Keys []string `toml:"keys"`
	// Identities are keyless signers (Fulcio certificates).
	Identities []TrustIdentity `toml:"identities"`
	// Threshold is how many distinct signers of Keys and Identities must
	// have signed; 0 means 1.
	Threshold int `toml:"threshold"`
}

// TrustIdentity is a keyless signer: the OIDC issuer and the subject (an
// email or URI) of its Fulcio certificate, exactly or by regexp.
type TrustIdentity struct {
	Issuer        string `toml:"issuer"`
	IssuerRegexp  string `toml:"issuer_regexp"`
	Subject       string `toml:"subject"`
	SubjectRegexp string `toml:"subject_regexp"`
}

// TrustPolicyPath is the policy file: PolicyFile, or trust.toml beside
// the configuration file configPath.
func (c *Config) TrustPolicyPath(configPath string) string {
	if c.Trust.PolicyFile != "" {
		return c.Trust.PolicyFile
	}
	if configPath == "" {
		configPath = DefaultPath
	}
	if abs, err := filepath.Abs(configPath); err == nil {
		configPath = abs
	}
	return filepath.Join(filepath.Dir(configPath), "trust.toml")
}

// TrustedRootPath is the sigstore trusted root for keyless signatures.
func (c *Config) TrustedRootPath(configPath string) string {
	if c.Trust.TrustedRoot != "" {
		return c.Trust.TrustedRoot
	}
	return filepath.Join(filepath.Dir(c.TrustPolicyPath(configPath)), "trusted_root.json")
}

func (t Trust) validate() error {
	if t.Default != "accept" && t.Default != "reject" {
		return fmt.Errorf("trust.default %q: want reject or accept", t.Default)
	}
	for _, p := range []struct{ key, path string }{{"policy_file", t.PolicyFile}, {"trusted_root", t.TrustedRoot}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return fmt.Errorf("trust.%s %q must be an absolute path", p.key, p.path)
		}
	}
	// The rules themselves are checked by the trust package, which
	// parses their keys; here only their shape.
	for i, r := range t.Rules {
		if r.Prefix == "" {
			return fmt.Errorf("trust.rules[%d]: prefix must not be empty (trust.default covers everything else)", i)
		}
		switch r.Action {
		case "accept", "signed", "reject":
		default:
			return fmt.Errorf("trust.rules[%d] (%s): action %q: want accept, signed or reject", i, r.Prefix, r.Action)
		}
	}
	return nil
}
