package testregistry_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
)

func TestThrottle(t *testing.T) {
	r := testregistry.StartTB(t)
	img, err := testimage.Random(1, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Push("library/rand:1", img); err != nil {
		t.Fatal(err)
	}
	d := layerDigest(t, img, 0)
	layers, _ := img.Layers()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(rc)
	get := func() ([]byte, time.Duration) {
		t.Helper()
		t0 := time.Now()
		resp, err := http.Get(r.URL() + "/v2/library/rand/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return body, time.Since(t0)
	}
	r.Throttle(len(want)) // about one second for the blob
	body, took := get()
	if !bytes.Equal(body, want) {
		t.Fatalf("throttled blob differs: %d bytes, want %d", len(body), len(want))
	}
	if took < 700*time.Millisecond {
		t.Fatalf("throttled to 1 s, the blob came in %v", took)
	}
	r.ClearFaults()
	if _, took := get(); took > 700*time.Millisecond {
		t.Fatalf("after ClearFaults the blob took %v", took)
	}
}
