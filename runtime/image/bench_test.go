package image

import (
	"context"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

// BenchmarkPull pulls a 3-layer image of 16 MiB layers from a registry on
// 127.0.0.1 into an empty store: fetch, verify, decompress, unpack, record.
// MB/s is over the compressed bytes transferred.
func BenchmarkPull(b *testing.B) {
	testutil.RequiresRoot(b, whyRoot)
	reg := testregistry.StartTB(b)
	src, err := testimage.Random(3, 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := reg.Push("bench/random:1", src); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(wantPullSize(b, src))
	ref := reg.Host() + "/bench/random:1"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Pull(context.Background(), ref, PullOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func wantPullSize(b *testing.B, img v1.Image) int64 {
	m, err := img.Manifest()
	if err != nil {
		b.Fatal(err)
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}
