package image

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image/trust"
)

// Verify checks an image's signatures against the trust policy now: a
// stored image by the digest it was stored with (and records the result),
// another reference by what its registry resolves it to. Nothing is
// pulled.
func (s *Store) Verify(ctx context.Context, refStr string, opts PullOptions) (*trust.Result, error) {
	if s.opts.Trust == nil || s.opts.SkipVerify {
		return nil, errdefs.FailedPrecondition("no trust policy to verify with (--insecure-options=image skips it)")
	}
	stored, err := s.Get(refStr)
	storedOK := err == nil
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	var ref Reference
	if storedOK {
		// The stored image's repository, as it was pulled.
		ref, err = storedRef(stored, refStr)
	} else {
		ref, err = ParseReference(refStr)
	}
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ep := range s.endpoints(ref.Host()) {
		res, err := s.verifyAt(ctx, ref, refStr, ep, stored, storedOK, opts)
		if err == nil {
			if storedOK {
				err = s.update(func(d *db) error {
					if img := d.byID(stored.ID); img != nil {
						img.Verification = res
					}
					return nil
				})
			}
			return res, err
		}
		if errors.Is(err, trust.ErrRefused) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, fmt.Errorf("from %s: %w", ep.host, err))
	}
	return nil, errdefs.Unavailable("verify %s: %w", ref, errors.Join(errs...))
}

func (s *Store) verifyAt(ctx context.Context, ref Reference, asked string, ep endpoint, stored Image, storedOK bool, opts PullOptions) (*trust.Result, error) {
	nref, ropts, _, err := s.remoteFor(ctx, ref, ep, opts)
	if err != nil {
		return nil, err
	}
	var top, platform digest.Digest
	if storedOK {
		top, platform = stored.ManifestDigest, stored.ManifestDigest
		if stored.IndexDigest != "" {
			top = stored.IndexDigest
		}
	} else {
		desc, err := remote.Get(nref, ropts...)
		if err != nil {
			return nil, err
		}
		top, platform = digest.FromBytes(desc.Manifest), digest.FromBytes(desc.Manifest)
		if desc.MediaType.IsIndex() {
			if rimg, err := desc.Image(); err == nil {
				if raw, err := rimg.RawManifest(); err == nil {
					platform = digest.FromBytes(raw)
				}
			}
		}
	}
	opts.SkipVerify = false
	return s.verify(ctx, ref, asked, ep, nref, ropts, top, platform, opts)
}

// storedRef is the repository a stored image was pulled from: the one
// refStr names if it is a reference, else its first digest name.
func storedRef(img Image, refStr string) (Reference, error) {
	if r, err := ParseReference(refStr); err == nil {
		for _, n := range append(append([]string{}, img.RepoTags...), img.RepoDigests...) {
			if n == r.String() {
				return r, nil
			}
		}
	}
	for _, n := range append(append([]string{}, img.RepoDigests...), img.RepoTags...) {
		if r, err := ParseReference(n); err == nil {
			return r, nil
		}
	}
	return Reference{}, errdefs.FailedPrecondition("image %s has no registry name to look its signatures up by", refStr)
}
