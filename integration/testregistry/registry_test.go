package testregistry_test

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
)

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func layerDigest(t *testing.T, img v1.Image, i int) v1.Hash {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[i].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestHost(t *testing.T) {
	r := testregistry.StartTB(t)
	if !strings.HasPrefix(r.Host(), "127.0.0.1:") {
		t.Errorf("Host() = %q, want 127.0.0.1:PORT", r.Host())
	}
	resp, err := http.Get(r.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/: %s", resp.Status)
	}
}

// StartOn serves on the address asked for (127.0.0.2 is loopback too, but
// not Start's 127.0.0.1), and Host names it.
func TestStartOn(t *testing.T) {
	r, err := testregistry.StartOn("127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !strings.HasPrefix(r.Host(), "127.0.0.2:") {
		t.Errorf("Host() = %q, want 127.0.0.2:PORT", r.Host())
	}
	resp, err := http.Get("http://" + r.Host() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/: %s", resp.Status)
	}
}

func TestPushPull(t *testing.T) {
	r := testregistry.StartTB(t)
	img := testimage.MustMultiLayer(t)
	d, err := r.Push("library/multi:latest", img)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := img.Digest(); d != want {
		t.Errorf("Push returned %s, image digest is %s", d, want)
	}
	for _, s := range []string{r.Ref("library/multi:latest"), r.Ref("library/multi@" + d.String())} {
		got, err := remote.Image(ref(t, s))
		if err != nil {
			t.Fatalf("pulling %s: %v", s, err)
		}
		if gd, _ := got.Digest(); gd != d {
			t.Errorf("pulled %s: digest %s, want %s", s, gd, d)
		}
		// Read every layer through ggcr's verifying reader.
		layers, err := got.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Errorf("reading layer of %s: %v", s, err)
			}
			rc.Close()
		}
	}
}

func TestPushIndex(t *testing.T) {
	r := testregistry.StartTB(t)
	idx := testimage.MustIndex(t)
	d, err := r.PushIndex("library/multiarch:latest", idx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Index(ref(t, r.Ref("library/multiarch:latest")))
	if err != nil {
		t.Fatal(err)
	}
	if gd, _ := got.Digest(); gd != d {
		t.Errorf("pulled index digest %s, want %s", gd, d)
	}
	// Both platforms are pullable; asking for a platform picks its manifest.
	for _, arch := range []string{runtime.GOARCH, testimage.ForeignArch()} {
		img, err := remote.Image(ref(t, r.Ref("library/multiarch:latest")),
			remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
		if err != nil {
			t.Fatalf("pulling linux/%s: %v", arch, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != arch {
			t.Errorf("asked for linux/%s, got %s", arch, cf.Architecture)
		}
	}
}

func TestRequests(t *testing.T) {
	r := testregistry.StartTB(t)
	img := testimage.MustBusybox(t)
	if _, err := r.Push("library/busybox:latest", img); err != nil {
		t.Fatal(err)
	}
	if r.Requests("") == 0 || r.RequestsWithMethod("PUT", "/manifests/latest") != 1 {
		t.Errorf("push not counted: %q", r.RequestLog())
	}
	r.ResetRequests()
	if n := r.Requests(""); n != 0 {
		t.Fatalf("%d requests after ResetRequests", n)
	}

	// Pull twice, each time reading the layer once: the counter must see
	// exactly two downloads of the layer blob.
	layer := layerDigest(t, img, 0)
	for range 2 {
		got, err := remote.Image(ref(t, r.Ref("library/busybox:latest")))
		if err != nil {
			t.Fatal(err)
		}
		l, err := got.LayerByDigest(layer)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, blob); err != nil {
			t.Fatal(err)
		}
		blob.Close()
	}
	if n := r.RequestsWithMethod("GET", "/blobs/"+layer.String()); n != 2 {
		t.Errorf("layer GETs = %d, want 2; log %q", n, r.RequestLog())
	}
	if n := r.Requests("/manifests/latest"); n < 2 {
		t.Errorf("manifest requests = %d, want at least 2", n)
	}
	if n := r.Requests("/no/such/path"); n != 0 {
		t.Errorf("Requests of an unused path = %d", n)
	}
}

func TestCorruptBlob(t *testing.T) {
	r := testregistry.StartTB(t)
	img := testimage.MustBusybox(t)
	if _, err := r.Push("library/busybox:latest", img); err != nil {
		t.Fatal(err)
	}
	layer := layerDigest(t, img, 0)
	r.CorruptBlob(layer.String())

	got, err := remote.Image(ref(t, r.Ref("library/busybox:latest")))
	if err != nil {
		t.Fatalf("manifest and config must still be served: %v", err)
	}
	l, err := got.LayerByDigest(layer)
	if err != nil {
		t.Fatal(err)
	}
	if sz, err := l.Size(); err != nil || sz == 0 {
		t.Fatalf("layer size %d: %v", sz, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("reading corrupted layer: got %d bytes, err %v; want a checksum error", n, err)
	}

	r.ClearFaults()
	rc, err = l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil {
		t.Errorf("after ClearFaults: %v", err)
	}
}

func TestFailAll(t *testing.T) {
	r := testregistry.StartTB(t)
	if _, err := r.Push("library/busybox:latest", testimage.MustBusybox(t)); err != nil {
		t.Fatal(err)
	}
	r.FailAll(true)
	for _, p := range []string{"/v2/", "/v2/library/busybox/manifests/latest"} {
		resp, err := http.Get(r.URL() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET %s with FailAll: %s, want 503", p, resp.Status)
		}
	}
	if n := r.Requests("/v2/library/busybox/manifests/latest"); n < 1 {
		t.Errorf("refused requests not counted")
	}
	r.FailAll(false)
	if _, err := remote.Image(ref(t, r.Ref("library/busybox:latest"))); err != nil {
		t.Errorf("after FailAll(false): %v", err)
	}
}
