package image

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/image/trust"
)

// UserAgent is sent to registries.
var UserAgent = "runclet"

// PullOptions tunes one pull.
type PullOptions struct {
	// Auth, when set, is used instead of the keychain (the CRI passes
	// kubelet's image pull secrets this way).
	Auth *authn.AuthConfig
	// Progress receives per-layer progress.
	Progress ProgressFunc
	// SkipVerify skips the trust policy for this pull (the CLI's
	// --insecure-options=image); the image is recorded as unverified.
	SkipVerify bool
}

// endpoint is one place an image can be pulled from: a mirror or the
// registry host itself.
type endpoint struct {
	host     string
	insecure bool // plain HTTP allowed, TLS not verified
	mirror   bool
}

// endpoints lists where to look for images of host: its mirrors in the
// configured order, then the host.
func (s *Store) endpoints(host string) []endpoint {
	reg := s.opts.Registries[host]
	var out []endpoint
	for _, m := range reg.Mirrors {
		ep := endpoint{mirror: true}
		switch {
		case strings.HasPrefix(m, "http://"):
			ep.host, ep.insecure = strings.TrimPrefix(m, "http://"), true
		default:
			ep.host = strings.TrimPrefix(m, "https://")
			ep.insecure = s.opts.Registries[ep.host].Insecure
		}
		ep.host = strings.TrimSuffix(ep.host, "/")
		out = append(out, ep)
	}
	return append(out, endpoint{host: host, insecure: reg.Insecure})
}

// Pull fetches an image (a tag or digest reference) into the store,
// resolving an index to this machine's platform, and names it ref.
func (s *Store) Pull(ctx context.Context, refStr string, opts PullOptions) (Image, error) {
	ref, err := ParseReference(refStr)
	if err != nil {
		return Image{}, err
	}
	gcLock, err := fsutil.LockFile(s.lockPath("gc.lock"), true)
	if err != nil {
		return Image{}, err
	}
	defer gcLock.Unlock()
	if s.opts.Trust != nil && !opts.SkipVerify && !s.opts.SkipVerify {
		// A reject rule refuses before anything is fetched.
		if err := s.opts.Trust.Precheck(refStr, ref.Repo); err != nil {
			return Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
	}

	var errs []error
	for _, ep := range s.endpoints(ref.Host()) {
		img, err := s.pullFrom(ctx, ref, refStr, ep, opts)
		if err == nil {
			return img, nil
		}
		if ctx.Err() != nil {
			return Image{}, fmt.Errorf("pull %s: %w", ref, ctx.Err())
		}
		if errors.Is(err, trust.ErrRefused) {
			// What one endpoint served was refused: another endpoint is
			// not asked to serve something else instead.
			return Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
		slog.WarnContext(ctx, "pull attempt failed", "ref", ref.String(), "endpoint", ep.host, "mirror", ep.mirror, "err", err)
		errs = append(errs, fmt.Errorf("from %s: %w", ep.host, err))
	}
	err = errors.Join(errs...)
	if allNotFound(errs) {
		return Image{}, errdefs.NotFound("pull %s: image not found: %w", ref, err)
	}
	// The causes keep their classes (a rejected blob is InvalidArgument);
	// what has none is the registry being unreachable.
	if errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrFailedPrecondition) || errors.Is(err, errdefs.ErrNotFound) {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	return Image{}, errdefs.Unavailable("pull %s: %w", ref, err)
}

func allNotFound(errs []error) bool {
	for _, err := range errs {
		var terr *transport.Error
		if errdefs.IsNotFound(err) {
			continue
		}
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
			return false
		}
	}
	return len(errs) > 0
}

func (s *Store) pullFrom(ctx context.Context, ref Reference, asked string, ep endpoint, opts PullOptions) (_ Image, retErr error) {
	nref, ropts, withheld, err := s.remoteFor(ctx, ref, ep, opts)
	if err != nil {
		return Image{}, err
	}
	if withheld {
		defer func() {
			var terr *transport.Error
			if errors.As(retErr, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
				retErr = fmt.Errorf("%w (credentials for %s were not sent: it speaks plain HTTP; set registries.%q.allow_plain_http_credentials = true to send them)", retErr, ep.host, ep.host)
			}
		}()
	}
	desc, err := remote.Get(nref, ropts...)
	if err != nil {
		return Image{}, err
	}
	top := digest.FromBytes(desc.Manifest)
	if ref.Digest != "" && top != ref.Digest {
		return Image{}, errdefs.InvalidArgument("manifest %s from %s has digest %s: rejected", ref.Digest, ep.host, top)
	}
	var indexDigest digest.Digest
	if desc.MediaType.IsIndex() {
		indexDigest = top
	}
	rimg, err := desc.Image() // resolves an index to our platform
	if err != nil {
		if indexDigest != "" {
			return Image{}, errdefs.NotFound("%s has no image for platform %s: %w", ref, s.opts.Platform.String(), err)
		}
		return Image{}, err
	}
	raw, err := rimg.RawManifest()
	if err != nil {
		return Image{}, err
	}
	// The trust policy is applied before anything is stored, so a
	// refusal leaves nothing behind.
	verification, err := s.verify(ctx, ref, asked, ep, nref, ropts, top, digest.FromBytes(raw), opts)
	if err != nil {
		return Image{}, err
	}
	if _, err := s.putBlobBytes(desc.Manifest); err != nil {
		return Image{}, err
	}
	md, err := s.putBlobBytes(raw)
	if err != nil {
		return Image{}, err
	}
	cfgName, err := rimg.ConfigName()
	if err != nil {
		return Image{}, err
	}
	cfgDigest := digest.Digest(cfgName.String())
	if !s.hasBlob(cfgDigest, -1) {
		cfgRaw, err := rimg.RawConfigFile()
		if err != nil {
			return Image{}, err
		}
		if err := s.putBlob(cfgDigest, int64(len(cfgRaw)), bytesReader(cfgRaw)); err != nil {
			return Image{}, err
		}
	}
	fetch := func(l Layer) fetchFunc {
		return func(context.Context) (io.ReadCloser, error) {
			h, err := v1.NewHash(l.Digest.String())
			if err != nil {
				return nil, err
			}
			rl, err := rimg.LayerByDigest(h)
			if err != nil {
				return nil, err
			}
			return rl.Compressed()
		}
	}
	img, err := s.materialize(ctx, md, fetch, s.opts.MaxConcurrentDownloads, &progressTracker{fn: opts.Progress})
	if err != nil {
		return Image{}, err
	}
	img.IndexDigest = indexDigest
	img.Verification = verification
	var tags []Reference
	if ref.Tag != "" {
		tags = append(tags, ref)
	}
	return s.record(img, tags, []Reference{ref.WithDigest(top)})
}

// remoteFor is ref at endpoint ep and the options to reach it.
func (s *Store) remoteFor(ctx context.Context, ref Reference, ep endpoint, opts PullOptions) (name.Reference, []remote.Option, bool, error) {
	var nopts []name.Option
	if ep.insecure {
		nopts = append(nopts, name.Insecure)
	}
	src := ep.host + "/" + ref.Path()
	if ref.Digest != "" {
		src += "@" + ref.Digest.String()
	} else {
		src += ":" + ref.Tag
	}
	nref, err := name.ParseReference(src, nopts...)
	if err != nil {
		return nil, nil, false, errdefs.InvalidArgument("reference %s at %s: %w", ref, ep.host, err)
	}
	auth, withheld, err := s.endpointAuth(ctx, ref, ep, nref.Context().Registry, opts)
	if err != nil {
		return nil, nil, false, err
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(registryTransport(ep, auth != authn.Anonymous && !s.opts.Registries[ep.host].AllowPlainHTTPCredentials)),
		remote.WithPlatform(s.opts.Platform),
		remote.WithUserAgent(UserAgent),
		remote.WithAuth(auth),
	}
	if ep.mirror {
		// A failing mirror should cost little before the next endpoint is
		// tried; the registry itself gets go-containerregistry's full
		// patience (three tries over several seconds).
		ropts = append(ropts, remote.WithRetryBackoff(remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 2}))
	}
	return nref, ropts, withheld, nil
}

// verify applies the trust policy to the manifest top (and platform,
// when top is an index) that endpoint ep served for ref. Signatures are
// looked for at the endpoint, then, for a mirror, at the registry itself;
// they must name ref's canonical repository either way.
func (s *Store) verify(ctx context.Context, ref Reference, asked string, ep endpoint, nref name.Reference, ropts []remote.Option, top, platform digest.Digest, opts PullOptions) (*trust.Result, error) {
	if s.opts.Trust == nil {
		return nil, nil
	}
	if opts.SkipVerify || s.opts.SkipVerify {
		slog.WarnContext(ctx, "image signature check skipped for this pull (--insecure-options=image)", "image", asked)
		return trust.Unverified(trust.ReasonSkipped), nil
	}
	t := trust.Target{Name: ref.Repo, Ref: asked, Digest: top, PlatformDigest: platform,
		Repos: []trust.Repo{{Repository: nref.Context(), Options: ropts}}}
	if ep.mirror {
		canon, err := s.canonicalRepo(ctx, ref, opts)
		if err != nil {
			return nil, err
		}
		t.Repos = append(t.Repos, trust.Repo{Repository: canon.repo, Options: canon.opts})
	}
	return s.opts.Trust.Verify(ctx, t)
}

type repoAccess struct {
	repo name.Repository
	opts []remote.Option
}

// canonicalRepo is how to reach ref's repository at its own registry.
func (s *Store) canonicalRepo(ctx context.Context, ref Reference, opts PullOptions) (repoAccess, error) {
	host := ref.Host()
	ep := endpoint{host: host, insecure: s.opts.Registries[host].Insecure}
	if host == "docker.io" {
		host = name.DefaultRegistry
	}
	var nopts []name.Option
	if ep.insecure {
		nopts = append(nopts, name.Insecure)
	}
	repo, err := name.NewRepository(host+"/"+ref.Path(), nopts...)
	if err != nil {
		return repoAccess{}, errdefs.InvalidArgument("reference %s: %w", ref, err)
	}
	auth, _, err := s.endpointAuth(ctx, ref, ep, repo.Registry, opts)
	if err != nil {
		return repoAccess{}, err
	}
	return repoAccess{repo: repo, opts: []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(registryTransport(ep, auth != authn.Anonymous && !s.opts.Registries[ep.host].AllowPlainHTTPCredentials)),
		remote.WithUserAgent(UserAgent),
		remote.WithAuth(auth),
	}}, nil
}

// endpointAuth picks the credentials for one endpoint. Credentials belong
// to the host they were given for: the pull's own (kubelet's pull secret,
// --creds) are for the image's registry and go to it only; a mirror gets
// only what the keychain holds for the mirror's own host. Credentials never
// go over plain HTTP (loopback included) unless the endpoint's host is
// configured with allow_plain_http_credentials: when the endpoint may speak
// plain HTTP, it is pinged first, and if it does, it is spoken to
// anonymously (withheld reports that).
func (s *Store) endpointAuth(ctx context.Context, ref Reference, ep endpoint, reg name.Registry, opts PullOptions) (auth authn.Authenticator, withheld bool, err error) {
	if opts.Auth != nil && !ep.mirror && ep.host == ref.Host() {
		auth = authn.FromConfig(*opts.Auth)
	} else if auth, err = s.opts.Keychain.Resolve(reg); err != nil {
		return nil, false, fmt.Errorf("credentials for %s: %w", ep.host, err)
	}
	if auth == authn.Anonymous || s.opts.Registries[ep.host].AllowPlainHTTPCredentials || reg.Scheme() != "http" {
		return auth, false, nil
	}
	pr, err := transport.Ping(ctx, reg, registryTransport(ep, false))
	if err != nil {
		return nil, false, err
	}
	if !pr.Insecure {
		return auth, false, nil
	}
	slog.WarnContext(ctx, "not sending registry credentials over plain HTTP", "endpoint", ep.host, "mirror", ep.mirror,
		"hint", fmt.Sprintf("set registries.%q.allow_plain_http_credentials = true to send them", ep.host))
	return authn.Anonymous, true, nil
}

// registryTransport is http.DefaultTransport with this endpoint's TLS
// policy, refusing plain HTTP unless the endpoint is insecure or on
// loopback. (go-containerregistry would also fall back to HTTP for private
// address ranges; runclet only does where configured.) With noPlainCreds
// it also refuses any plain-HTTP request that carries credentials: the
// ping in endpointAuth saw TLS, so this only trips on a later redirect or
// token realm that downgrades.
func registryTransport(ep endpoint, noPlainCreds bool) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if ep.insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // configured by the operator for this host
	}
	return &plainHTTPGuard{next: t, host: ep.host, allow: ep.insecure || isLoopbackHost(ep.host), noCreds: noPlainCreds}
}

type plainHTTPGuard struct {
	next    http.RoundTripper
	host    string // the endpoint, as configured
	allow   bool
	noCreds bool
}

func (g *plainHTTPGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "http" {
		return g.next.RoundTrip(r)
	}
	if !g.allow && !isLoopbackHost(r.URL.Host) {
		return nil, errdefs.FailedPrecondition("refusing plain HTTP to %s: configure the registry as insecure to allow it", r.URL.Host)
	}
	// An Authorization header, or an OAuth token request (its form carries
	// a refresh token or password).
	if g.noCreds && (r.Header.Get("Authorization") != "" || r.Method == http.MethodPost) {
		return nil, errdefs.FailedPrecondition("refusing to send registry credentials for %s over plain HTTP to %s: set registries.%q.allow_plain_http_credentials = true to allow it", g.host, r.URL.Host, g.host)
	}
	return g.next.RoundTrip(r)
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
