package image

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
	"github.com/runclet/runclet/runtime/config"
)

// hostKeychain holds credentials for one registry host, as a docker
// config.json with one "auths" entry does.
type hostKeychain struct {
	host string
	cfg  authn.AuthConfig
}

func (k hostKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		return authn.FromConfig(k.cfg), nil
	}
	return authn.Anonymous, nil
}

func basicHeader(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestPullNeverSendsUpstreamCredentialsToMirrors pulls through an open
// mirror and a mirror that asks for credentials, with the upstream's
// credentials given to the pull (as kubelet does) or in the keychain: no
// mirror ever sees them, the upstream does. Plain HTTP is allowed for all
// three so that only where credentials go is tested.
func TestPullNeverSendsUpstreamCredentialsToMirrors(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	upstream, open, private := testregistry.StartTB(t), testregistry.StartTB(t), testregistry.StartTB(t)
	src := must[v1.Image](t)(testimage.Busybox())
	other := must[v1.Image](t)(testimage.WithUser(src, "1000"))
	must[v1.Hash](t)(upstream.Push("library/busybox:1", src))
	must[v1.Hash](t)(upstream.Push("library/other:1", other))
	must[v1.Hash](t)(open.Push("library/busybox:1", src))
	must[v1.Hash](t)(private.Push("library/busybox:1", src))
	upstream.RequireBasicAuth("user", "upstream-secret")
	private.RequireBasicAuth("mirror-user", "mirror-secret")
	creds := authn.AuthConfig{Username: "user", Password: "upstream-secret"}
	regs := map[string]config.Registry{
		upstream.Host(): {Mirrors: []string{"http://" + private.Host(), "http://" + open.Host()}, AllowPlainHTTPCredentials: true},
		private.Host():  {AllowPlainHTTPCredentials: true},
		open.Host():     {AllowPlainHTTPCredentials: true},
	}
	for name, how := range map[string]struct {
		keychain authn.Keychain
		pull     PullOptions
	}{
		"pull-credentials": {authn.NewMultiKeychain(), PullOptions{Auth: &creds}},
		"keychain":         {hostKeychain{upstream.Host(), creds}, PullOptions{}},
	} {
		t.Run(name, func(t *testing.T) {
			for _, r := range []*testregistry.Registry{upstream, open, private} {
				r.ResetRequests()
			}
			s := must[*Store](t)(Open(t.TempDir(), Options{Registries: regs, Keychain: how.keychain}))
			// busybox:1 comes from the open mirror, after the private one
			// refused; other:1 only the upstream has.
			for _, repo := range []string{"library/busybox:1", "library/other:1"} {
				if _, err := s.Pull(context.Background(), upstream.Ref(repo), how.pull); err != nil {
					t.Fatalf("pull %s: %v", repo, err)
				}
			}
			if open.Requests("/v2/library/busybox/manifests/") == 0 || private.Requests("/v2/") == 0 {
				t.Fatalf("mirrors not tried: open %v, private %v", open.RequestLog(), private.RequestLog())
			}
			for name, r := range map[string]*testregistry.Registry{"open mirror": open, "private mirror": private} {
				if got := r.AuthHeaders(); len(got) != 0 {
					t.Errorf("the %s was sent credentials: %q", name, got)
				}
			}
			want := basicHeader("user", "upstream-secret")
			if got := upstream.AuthHeaders(); len(got) == 0 || got[0] != want {
				t.Errorf("upstream got Authorization %q, want %q", got, want)
			}
		})
	}
}

// TestPullWithholdsCredentialsOverPlainHTTP: a registry on plain HTTP
// (loopback, so reachable without insecure = true) is never sent
// credentials unless allow_plain_http_credentials is set for it.
func TestPullWithholdsCredentialsOverPlainHTTP(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	private, public := testregistry.StartTB(t), testregistry.StartTB(t)
	src := must[v1.Image](t)(testimage.Busybox())
	must[v1.Hash](t)(private.Push("library/busybox:1", src))
	must[v1.Hash](t)(public.Push("library/busybox:1", src))
	private.RequireBasicAuth("user", "secret")
	creds := authn.AuthConfig{Username: "user", Password: "secret"}

	for name, how := range map[string]struct {
		keychain authn.Keychain
		pull     PullOptions
	}{
		"pull-credentials": {authn.NewMultiKeychain(), PullOptions{Auth: &creds}},
		"keychain":         {authn.NewMultiKeychain(hostKeychain{private.Host(), creds}, hostKeychain{public.Host(), creds}), PullOptions{}},
	} {
		t.Run(name, func(t *testing.T) {
			private.ResetRequests()
			public.ResetRequests()
			s := must[*Store](t)(Open(t.TempDir(), Options{Keychain: how.keychain}))
			_, err := s.Pull(context.Background(), private.Ref("library/busybox:1"), how.pull)
			t.Logf("error: %v", err)
			if err == nil || !strings.Contains(err.Error(), "allow_plain_http_credentials") {
				t.Fatalf("pull from a plain-HTTP registry that needs credentials: want an error naming allow_plain_http_credentials, got %v", err)
			}
			if got := private.AuthHeaders(); len(got) != 0 {
				t.Fatalf("credentials sent over plain HTTP: %q", got)
			}
			// A registry that needs none still works, anonymously.
			if _, err := s.Pull(context.Background(), public.Ref("library/busybox:1"), how.pull); err != nil {
				t.Fatalf("anonymous pull over plain HTTP: %v", err)
			}
			if got := public.AuthHeaders(); len(got) != 0 {
				t.Fatalf("credentials sent over plain HTTP: %q", got)
			}

			// Allowed explicitly, they are sent.
			regs := map[string]config.Registry{private.Host(): {AllowPlainHTTPCredentials: true}}
			s = must[*Store](t)(Open(t.TempDir(), Options{Keychain: how.keychain, Registries: regs}))
			if _, err := s.Pull(context.Background(), private.Ref("library/busybox:1"), how.pull); err != nil {
				t.Fatalf("pull with allow_plain_http_credentials: %v", err)
			}
			if got := private.AuthHeaders(); len(got) == 0 || got[0] != basicHeader("user", "secret") {
				t.Fatalf("allowed credentials not sent: %q", got)
			}
		})
	}
}

// TestPlainHTTPGuardRefusesCredentials is the backstop: once an endpoint
// was found to speak TLS, a plain-HTTP request carrying credentials (a
// redirect or token realm that downgrades) is refused, not sent.
func TestPlainHTTPGuardRefusesCredentials(t *testing.T) {
	reg := testregistry.StartTB(t)
	rt := registryTransport(endpoint{host: reg.Host()}, true)
	req := must[*http.Request](t)(http.NewRequest(http.MethodGet, reg.URL()+"/v2/", nil))
	req.Header.Set("Authorization", basicHeader("user", "secret"))
	if _, err := rt.RoundTrip(req); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("credentials over plain HTTP: want FailedPrecondition, got %v", err)
	}
	post := must[*http.Request](t)(http.NewRequest(http.MethodPost, reg.URL()+"/token", strings.NewReader("grant_type=refresh_token&refresh_token=x")))
	if _, err := rt.RoundTrip(post); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("token form over plain HTTP: want FailedPrecondition, got %v", err)
	}
	if got := reg.AuthHeaders(); len(got) != 0 || reg.Requests("") != 0 {
		t.Fatalf("registry saw %v", reg.RequestLog())
	}
	anon := must[*http.Request](t)(http.NewRequest(http.MethodGet, reg.URL()+"/v2/", nil))
	resp, err := rt.RoundTrip(anon)
	if err != nil {
		t.Fatalf("plain request without credentials: %v", err)
	}
	resp.Body.Close()
}
