// Package testregistry runs an in-process OCI distribution registry (ggcr's
// pkg/registry, in memory) on 127.0.0.1, so image tests never leave the
// machine. It counts requests, records the Authorization headers it is
// sent, can demand HTTP Basic credentials, throttle blob downloads, and
// inject faults: corrupted blobs and blanket 503s.
package testregistry

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is a running registry. It is safe for concurrent use.
type Registry struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []request
	corrupt  map[string]bool // digest -> corrupt GETs of that blob
	failAll  bool
	throttle int    // bytes per second of blob GET bodies; 0: unlimited
	basic    string // "user:password" RequireBasicAuth demands; "" for none
}

type request struct {
	method, path string
	auth         string // the Authorization header, "" if none
}

// Start starts a registry listening on 127.0.0.1 on a free port. It is
// plain HTTP; clients must treat it as an insecure registry (ggcr and most
// clients do so by default for 127.0.0.1).
func Start() (*Registry, error) { return start(false) }

// StartWithReferrers starts a registry that also serves the OCI 1.1
// referrers API (without it, clients fall back to the referrers tag
// schema, sha256-<hex>).
func StartWithReferrers() (*Registry, error) { return start(true) }

func start(referrers bool) (*Registry, error) {
	r := &Registry{corrupt: map[string]bool{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(referrers))
	// httptest.NewServer listens on 127.0.0.1:0 (IPv6 loopback only if v4
	// is missing); it panics if it cannot listen, which we turn into an
	// error for callers outside tests.
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("starting test registry: %v", p)
			}
		}()
		r.srv = httptest.NewServer(r.middleware(h))
	}()
	if err != nil {
		return nil, err
	}
	return r, nil
}

// StartOn is Start listening on addr ("10.240.0.1:0") instead of
// loopback, for clients in other network namespaces; Host and Ref then
// name that address.
func StartOn(addr string) (*Registry, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("starting test registry on %s: %w", addr, err)
	}
	r := &Registry{corrupt: map[string]bool{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewUnstartedServer(r.middleware(h))
	r.srv.Listener.Close()
	r.srv.Listener = ln
	r.srv.Start()
	return r, nil
}

// StartTB starts a registry for a test and closes it when the test ends.
func StartTB(t testing.TB) *Registry {
	t.Helper()
	r, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// StartTBWithReferrers is StartWithReferrers for a test.
func StartTBWithReferrers(t testing.TB) *Registry {
	t.Helper()
	r, err := StartWithReferrers()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// Close stops the registry and drops its contents.
func (r *Registry) Close() { r.srv.Close() }

// Host returns "127.0.0.1:PORT", the registry part of image references.
func (r *Registry) Host() string { return r.srv.Listener.Addr().String() }

// URL returns "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return r.srv.URL }

// Ref returns the full reference for repoRef ("library/busybox:latest" ->
// "127.0.0.1:PORT/library/busybox:latest").
func (r *Registry) Ref(repoRef string) string { return r.Host() + "/" + repoRef }

// Requests returns how many requests, of any method, the registry has
// received whose URL path contains pathSubstring ("" counts all). Requests
// refused by FailAll count too. Pass a digest to ask how often a blob or
// manifest was touched.
func (r *Registry) Requests(pathSubstring string) int {
	return r.RequestsWithMethod("", pathSubstring)
}

// RequestsWithMethod is Requests restricted to one HTTP method ("" for
// all); use "GET" to count downloads, since clients also send HEADs.
func (r *Registry) RequestsWithMethod(method, pathSubstring string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.requests {
		if (method == "" || q.method == method) && strings.Contains(q.path, pathSubstring) {
			n++
		}
	}
	return n
}

// RequestLog returns every request so far as "METHOD /path", in order, for
// test failure messages.
func (r *Registry) RequestLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.requests))
	for i, q := range r.requests {
		out[i] = q.method + " " + q.path
	}
	return out
}

// ResetRequests forgets the requests counted so far, so a test can count
// only what one operation does (e.g. a second pull after pushing).
func (r *Registry) ResetRequests() {
	r.mu.Lock()
	r.requests = nil
	r.mu.Unlock()
}

// CorruptBlob makes every later GET of the blob with this digest
// ("sha256:...") return other bytes of the same length, so a client gets a
// well-formed response whose content fails digest verification. HEADs and
// the stored blob are unchanged.
func (r *Registry) CorruptBlob(digest string) {
	r.mu.Lock()
	r.corrupt[digest] = true
	r.mu.Unlock()
}

// FailAll makes every request, from now until FailAll(false), fail with
// 503 Service Unavailable, as a registry that is down would; for mirror
// fallback and retry tests.
func (r *Registry) FailAll(fail bool) {
	r.mu.Lock()
	r.failAll = fail
	r.mu.Unlock()
}

// RequireBasicAuth makes every later request without the HTTP Basic
// credentials user:password fail with 401 and a Basic challenge, as a
// private registry does. Push before calling it: Push sends none.
func (r *Registry) RequireBasicAuth(user, password string) {
	r.mu.Lock()
	r.basic = user + ":" + password
	r.mu.Unlock()
}

// AuthHeaders returns the Authorization headers of every request so far
// that carried one, in order: what a client disclosed to this registry.
func (r *Registry) AuthHeaders() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.requests {
		if q.auth != "" {
			out = append(out, q.auth)
		}
	}
	return out
}

// ClearFaults undoes CorruptBlob and FailAll.
func (r *Registry) ClearFaults() {
	r.mu.Lock()
	r.corrupt = map[string]bool{}
	r.failAll = false
	r.throttle = 0
	r.mu.Unlock()
}

// middleware records each request and applies the faults in force.
func (r *Registry) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, request{req.Method, req.URL.Path, req.Header.Get("Authorization")})
		fail := r.failAll
		corrupt := req.Method == http.MethodGet && r.isCorrupt(req.URL.Path)
		rate := 0
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			rate = r.throttle
		}
		basic := r.basic
		r.mu.Unlock()

		if basic != "" {
			user, pass, ok := req.BasicAuth()
			if !ok || user+":"+pass != basic {
				w.Header().Set("WWW-Authenticate", `Basic realm="testregistry"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"testregistry: credentials required"}]}`)
				return
			}
		}
		if fail {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"testregistry: FailAll is on"}]}`)
			return
		}
		if corrupt {
			w = &flipWriter{ResponseWriter: w}
		}
		if rate > 0 {
			w = &slowWriter{ResponseWriter: w, rate: rate}
		}
		next.ServeHTTP(w, req)
	})
}

// isCorrupt reports whether path is a blob path (/v2/<repo>/blobs/<digest>)
// for a corrupted digest. r.mu must be held.
func (r *Registry) isCorrupt(path string) bool {
	i := strings.LastIndex(path, "/blobs/")
	return i >= 0 && r.corrupt[path[i+len("/blobs/"):]]
}

// flipWriter inverts every byte of the body: same length, and every byte
// differs, so the content can never still match its digest.
type flipWriter struct {
	http.ResponseWriter
}

func (f *flipWriter) Write(p []byte) (int, error) {
	q := make([]byte, len(p))
	for i, b := range p {
		q[i] = ^b
	}
	return f.ResponseWriter.Write(q)
}

// Push uploads img as repoRef ("library/busybox:latest" or
// "repo@sha256:...") and returns its manifest digest.
func (r *Registry) Push(repoRef string, img v1.Image) (v1.Hash, error) {
	ref, err := r.parse(repoRef)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return d, nil
}

// PushIndex uploads idx, with all its manifests and blobs, as repoRef and
// returns the index digest.
func (r *Registry) PushIndex(repoRef string, idx v1.ImageIndex) (v1.Hash, error) {
	ref, err := r.parse(repoRef)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing index %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pushing index %s: %w", ref, err)
	}
	return d, nil
}

func (r *Registry) parse(repoRef string) (name.Reference, error) {
	ref, err := name.ParseReference(r.Ref(repoRef), name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("test registry reference %q: %w", repoRef, err)
	}
	return ref, nil
}

// Throttle limits the body of every later blob GET to about bytesPerSecond
// (0 lifts the limit), so a test can act in the middle of a pull.
func (r *Registry) Throttle(bytesPerSecond int) {
	r.mu.Lock()
	r.throttle = bytesPerSecond
	r.mu.Unlock()
}

// slowWriter sends a body in small flushed pieces at about rate bytes per
// second. A client that went away makes Write fail and the handler stop.
type slowWriter struct {
	http.ResponseWriter
	rate int
}

func (s *slowWriter) Write(p []byte) (int, error) {
	chunk := max(s.rate/20, 1) // 20 pieces a second
	n := 0
	for n < len(p) {
		m := min(chunk, len(p)-n)
		k, err := s.ResponseWriter.Write(p[n : n+m])
		n += k
		if err != nil {
			return n, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		time.Sleep(time.Duration(m) * time.Second / time.Duration(s.rate))
	}
	return n, nil
}
