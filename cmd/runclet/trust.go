package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/config"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/image/trust"
)

// insecureOptions is rkt's --insecure-options: "image" skips the image
// trust policy for this one command.
var insecureOptions []string

func addInsecureOptionsFlag(root *cobra.Command) {
	root.PersistentFlags().StringSliceVar(&insecureOptions, "insecure-options", nil,
		"checks to skip for this command: image (pull without verifying signatures against the trust policy)")
}

func skipImageVerification() (bool, error) {
	skip := false
	for _, o := range insecureOptions {
		switch o {
		case "image":
			skip = true
		case "none", "":
		default:
			return false, errdefs.InvalidArgument("--insecure-options %q: want image", o)
		}
	}
	return skip, nil
}

// trustVerifier is the live trust policy of this configuration.
func (g *globals) trustVerifier() *trust.Verifier {
	return &trust.Verifier{
		Source:      trust.NewSource(g.cfg.Trust, g.cfg.TrustPolicyPath(g.configPath)),
		TrustedRoot: g.cfg.TrustedRootPath(g.configPath),
	}
}

// checkDaemonTrust reads the policy once at daemon start: a policy that
// does not parse stops the start, and a default that accepts anything is
// said once.
func checkDaemonTrust(v *trust.Verifier) error {
	p, err := v.Source.Policy()
	if err != nil {
		return err
	}
	if p.Default == trust.Accept {
		slog.Warn("the image trust policy's default is accept: images no trust rule covers are pulled without any signature check",
			"policy_file", v.Source.Path(), "hint", "set [trust] default = \"reject\" and add rules with `runclet trust add`")
	}
	return nil
}

func trustCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "trust",
		Short: "Manage the image trust policy: who must have signed images, by registry/repository prefix",
		Long: `Manage the image trust policy (see docs/images.md, "Trust and signatures").

Rules match a registry/repository prefix; the longest matching prefix
decides: accept (no check), signed (by the listed keys or keyless
identities) or reject. Rules added here go to the policy file
([trust] policy_file, default trust.toml beside the configuration file),
which a running daemon re-reads when it changes.`,
	}
	c.AddCommand(trustAdd(g), trustList(g), trustRemove(g))
	return c
}

func trustAdd(g *globals) *cobra.Command {
	var keys []string
	var identity, identityRegexp, accept, reject bool
	var threshold int
	c := &cobra.Command{
		Use:   "add PREFIX (--key FILE... | --identity ISSUER SUBJECT | --accept | --reject)",
		Short: "Trust signers for a prefix, or accept or reject it",
		Example: `  runclet trust add ghcr.io/acme --key cosign.pub
  runclet trust add registry.k8s.io --identity https://accounts.google.com krel-trust@k8s-releng-prod.iam.gserviceaccount.com
  runclet trust add ghcr.io/acme --identity-regexp https://token.actions.githubusercontent.com '^https://github.com/acme/'
  runclet trust add 127.0.0.1:5000 --accept`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := args[0]
			var id *config.TrustIdentity
			switch {
			case identity || identityRegexp:
				if len(args) != 3 {
					return errdefs.InvalidArgument("--identity wants ISSUER SUBJECT after the prefix")
				}
				id = &config.TrustIdentity{Issuer: args[1], Subject: args[2]}
				if identityRegexp {
					id = &config.TrustIdentity{IssuerRegexp: args[1], SubjectRegexp: args[2]}
				}
			case len(args) != 1:
				return errdefs.InvalidArgument("unexpected arguments %v (only --identity takes ISSUER SUBJECT)", args[1:])
			}
			modes := 0
			for _, on := range []bool{len(keys) > 0 || id != nil, accept, reject} {
				if on {
					modes++
				}
			}
			if modes != 1 {
				return errdefs.InvalidArgument("say one of --key FILE, --identity ISSUER SUBJECT, --accept or --reject")
			}
			var pems []string
			for _, k := range keys {
				data, err := os.ReadFile(k)
				if err != nil {
					return errdefs.InvalidArgument("--key: %w", err)
				}
				if _, err := trust.LoadKey(string(data), ""); err != nil {
					return errdefs.InvalidArgument("--key %s: %w", k, err)
				}
				pems = append(pems, string(data))
			}
			path := g.cfg.TrustPolicyPath(g.configPath)
			var written config.TrustRule
			err := trust.Edit(g.cfg.Trust, path, func(f *trust.File) error {
				r := config.TrustRule{Prefix: trust.NormalizePrefix(prefix)}
				switch {
				case accept:
					r.Action = trust.Accept
				case reject:
					r.Action = trust.Reject
				default:
					r.Action = trust.Signed
					// Signers add up on an existing signed rule.
					for _, o := range f.Rules {
						if trust.NormalizePrefix(o.Prefix) == r.Prefix && o.Action == trust.Signed {
							r = o
							r.Prefix = trust.NormalizePrefix(o.Prefix)
						}
					}
					for _, p := range pems {
						if !slices.Contains(r.Keys, p) {
							r.Keys = append(r.Keys, p)
						}
					}
					if id != nil && !slices.Contains(r.Identities, *id) {
						r.Identities = append(r.Identities, *id)
					}
					if threshold > 0 {
						r.Threshold = threshold
					}
				}
				trust.AddRule(f, r)
				written = r
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (%s)\n", written.Prefix, describeRule(written), path)
			return nil
		},
	}
	c.Flags().StringArrayVar(&keys, "key", nil, "PEM public key file (cosign.pub; ECDSA, Ed25519 or RSA); repeatable")
	c.Flags().BoolVar(&identity, "identity", false, "trust a keyless signer: ISSUER SUBJECT follow the prefix")
	c.Flags().BoolVar(&identityRegexp, "identity-regexp", false, "like --identity, ISSUER and SUBJECT being regular expressions")
	c.Flags().BoolVar(&accept, "accept", false, "pull images under the prefix without any check")
	c.Flags().BoolVar(&reject, "reject", false, "never pull images under the prefix")
	c.Flags().IntVar(&threshold, "threshold", 0, "distinct signers required (N of the rule's keys and identities; default 1)")
	return c
}

func describeRule(r config.TrustRule) string {
	if r.Action != trust.Signed {
		return r.Action
	}
	var parts []string
	for _, k := range r.Keys {
		if key, err := trust.LoadKey(k, ""); err == nil {
			parts = append(parts, "key "+trust.ShortID(key.ID))
		} else {
			parts = append(parts, "key "+k)
		}
	}
	for _, id := range r.Identities {
		parts = append(parts, "identity "+trust.Identity(id).String())
	}
	n := max(r.Threshold, 1)
	return fmt.Sprintf("signed by %d of: %s", n, strings.Join(parts, ", "))
}

func trustList(g *globals) *cobra.Command {
	var out outputFlag
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the trust rules in force (configuration and policy file)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			v := g.trustVerifier()
			p, err := v.Source.Policy()
			if err != nil {
				return err
			}
			rules := slices.Clone(p.Rules)
			slices.SortFunc(rules, func(a, b trust.Rule) int { return strings.Compare(a.Prefix, b.Prefix) })
			if asJSON {
				type jsonRule struct {
					Prefix     string           `json:"prefix"`
					Action     string           `json:"action"`
					Keys       []string         `json:"keys,omitempty"`
					Identities []trust.Identity `json:"identities,omitempty"`
					Threshold  int              `json:"threshold,omitempty"`
					Source     string           `json:"source"`
				}
				list := []jsonRule{}
				for _, r := range rules {
					jr := jsonRule{Prefix: r.Prefix, Action: r.Action, Identities: r.Identities, Threshold: r.Threshold, Source: r.Source}
					for _, k := range r.Keys {
						jr.Keys = append(jr.Keys, k.ID)
					}
					list = append(list, jr)
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"default": p.Default, "policyFile": v.Source.Path(), "rules": list})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "PREFIX\tACTION\tSIGNERS\tSOURCE")
			for _, r := range rules {
				var signers []string
				for _, k := range r.Keys {
					signers = append(signers, "key "+trust.ShortID(k.ID))
				}
				for _, id := range r.Identities {
					signers = append(signers, "identity "+id.String())
				}
				s := strings.Join(signers, ", ")
				if r.Action == trust.Signed {
					s = fmt.Sprintf("%d of: %s", r.Threshold, s)
				} else {
					s = "-"
				}
				src := r.Source
				if src != v.Source.Path() {
					src = "config"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Prefix, r.Action, s, src)
			}
			fmt.Fprintf(tw, "(anything else)\t%s\t-\tdefault\n", p.Default)
			return tw.Flush()
		},
	}
	out.add(c)
	return c
}

func trustRemove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm PREFIX",
		Aliases: []string{"remove"},
		Short:   "Remove the policy file's rule for a prefix",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := g.cfg.TrustPolicyPath(g.configPath)
			err := trust.Edit(g.cfg.Trust, path, func(f *trust.File) error { return trust.RemoveRule(f, args[0]) })
			if errdefs.IsNotFound(err) {
				for _, r := range g.cfg.Trust.Rules {
					if trust.NormalizePrefix(r.Prefix) == trust.NormalizePrefix(args[0]) {
						return errdefs.FailedPrecondition("the rule for %s is in the configuration file %s, not in the policy file: edit it there", args[0], g.configPath)
					}
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed the rule for %s (%s)\n", trust.NormalizePrefix(args[0]), path)
			return nil
		},
	}
}

func imageVerify(g *globals) *cobra.Command {
	var out outputFlag
	c := &cobra.Command{
		Use:   "verify IMAGE",
		Short: "Check an image's signatures against the trust policy now and print who signed it",
		Long: `Check an image's signatures against the trust policy and print who signed it.
A stored image is checked by the digest it was stored with, and the result
is recorded (image ls, image inspect --full); another reference is resolved
at its registry. Nothing is pulled.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			res, err := s.Verify(cmd.Context(), args[0], image.PullOptions{})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, res)
			}
			if res.Status != trust.StatusVerified {
				fmt.Fprintf(w, "%s: not verified: trust rule %q (%s) accepts it without a check\n", args[0], res.Rule, res.Action)
				return nil
			}
			fmt.Fprintf(w, "%s: verified (trust rule %q), %s signed by:\n", args[0], res.Rule, res.Digest)
			for _, sg := range res.Signers {
				fmt.Fprintf(w, "  %s\n", sg)
			}
			return nil
		},
	}
	out.add(c)
	return c
}

// verifyImported applies the trust policy to images just imported, by
// their names at their registries (`image import --verify`). A refused
// image, or one with no registry name, is removed again; if it was stored
// before the import, only the names the import gave it are.
func verifyImported(ctx context.Context, s *image.Store, imgs, before []image.Image) error {
	had, hadName := map[string]bool{}, map[string]bool{}
	for _, img := range before {
		had[img.ID.String()] = true
		for _, n := range img.RepoTags {
			hadName[n] = true
		}
	}
	var errs []error
	for _, img := range imgs {
		if len(img.RepoTags) == 0 && len(img.RepoDigests) == 0 {
			errs = append(errs, errdefs.FailedPrecondition("imported image %s has no name to look its signatures up by", img.ID))
		} else if _, err := s.Verify(ctx, importedName(img, hadName), image.PullOptions{}); err != nil {
			errs = append(errs, err)
		} else {
			continue
		}
		if !had[img.ID.String()] {
			if _, err := s.Remove(img.ID.String(), image.RemoveOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("removing %s again: %w", img.ID, err))
			}
			continue
		}
		// Stored before: only the names this import gave it go.
		for _, n := range img.RepoTags {
			if !hadName[n] {
				if _, err := s.Remove(n, image.RemoveOptions{}); err != nil {
					errs = append(errs, fmt.Errorf("removing the name %s again: %w", n, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// importedName is the name an import gave img (the archive's), by which
// its signatures are looked up.
func importedName(img image.Image, hadName map[string]bool) string {
	for _, n := range img.RepoTags {
		if !hadName[n] {
			return n
		}
	}
	if len(img.RepoTags) > 0 {
		return img.RepoTags[0]
	}
	return img.ID.String()
}
