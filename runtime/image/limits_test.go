package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
	"github.com/runclet/runclet/runtime/config"
)

// imageOfTar is a one-layer image whose layer is the gzip of tarData.
func imageOfTar(t *testing.T, tarData []byte) (v1.Image, v1.Hash) {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarData)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img, must[v1.Hash](t)(l.Digest())
}

func manyEntriesTar(t *testing.T, n int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range n {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%03d", i), Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	return buf.Bytes()
}

// zerosTar has one file of size zero bytes: gzip makes a small bomb of it.
func zerosTar(t *testing.T, size int64) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	tw.Write(make([]byte, size))
	tw.Close()
	return buf.Bytes()
}

func TestPullRefusesLayersOverLimits(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	limits := config.ImageUnpack{MaxLayerSize: 1 << 20, MaxLayerEntries: 100}
	for _, tc := range []struct {
		name, key string
		tar       []byte
	}{
		{"entries", "image.unpack.max_layer_entries = 100", manyEntriesTar(t, 101)},
		{"size", "image.unpack.max_layer_size = 1048576", zerosTar(t, 64<<20)},
		// Small files, then 64 MiB of zeros after the end of the archive:
		// only the stream count sees it.
		{"stream", "image.unpack.max_layer_size = 1048576", append(manyEntriesTar(t, 1), make([]byte, 64<<20)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, layer := imageOfTar(t, tc.tar)
			must[v1.Hash](t)(reg.Push("limits/"+tc.name+":1", img))
			s, err := Open(t.TempDir(), Options{Unpack: limits})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Pull(context.Background(), reg.Ref("limits/"+tc.name+":1"), PullOptions{})
			t.Logf("error: %v", err)
			if err == nil {
				t.Fatal("layer over the limit was pulled")
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), layer.String()) || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error is not InvalidArgument naming layer %s and %q: %v", layer, tc.key, err)
			}
			for _, sub := range []string{"ingest", "layers/tmp", "layers/sha256"} {
				if got := entries(t, s, sub); len(got) != 0 {
					t.Errorf("%s left %v", sub, got)
				}
			}
			if s.hasBlob(digest.Digest(layer.String()), -1) {
				t.Error("refused layer blob stored")
			}
			if imgs := must[[]Image](t)(s.List()); len(imgs) != 0 {
				t.Errorf("image recorded despite a refused layer: %v", imgs)
			}
		})
	}
	// At the limits exactly, both pull.
	img, _ := imageOfTar(t, manyEntriesTar(t, 100))
	must[v1.Hash](t)(reg.Push("limits/ok:1", img))
	s := must[*Store](t)(Open(t.TempDir(), Options{Unpack: limits}))
	if _, err := s.Pull(context.Background(), reg.Ref("limits/ok:1"), PullOptions{}); err != nil {
		t.Fatalf("layer at the entry limit: %v", err)
	}
}

// zstdFrame is a zstd frame holding payload in one raw block, with the
// frame header descriptor fhd and window/size fields hdr chosen by the
// caller.
func zstdFrame(fhd byte, hdr []byte, payload []byte) []byte {
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, fhd}
	out = append(out, hdr...)
	bh := uint32(len(payload))<<3 | 1 // last block, raw
	out = append(out, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(out, payload...)
}

func TestZstdWindowIsBounded(t *testing.T) {
	payload := manyEntriesTar(t, 1)
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		// Window_Descriptor exponent 18: a 256 MiB window (the decoder's
		// own default cap is 512 MiB).
		{"window-256MiB", zstdFrame(0x00, []byte{18 << 3}, payload)},
		// Exponent 21: 2 GiB.
		{"window-2GiB", zstdFrame(0x00, []byte{21 << 3}, payload)},
		// Single segment: the window is the declared content size, 256 MiB.
		{"single-segment", zstdFrame(0xc0|0x20, []byte{0, 0, 0, 16, 0, 0, 0, 0}, payload)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec, err := decompress(bytes.NewReader(tc.frame), 128<<20)
			if err == nil {
				_, err = io.Copy(io.Discard, dec)
				dec.Close()
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, zstd.ErrWindowSizeExceeded) && !errors.Is(err, zstd.ErrDecoderSizeExceeded) {
				t.Fatalf("zstd frame with a huge window: want ErrWindowSizeExceeded or ErrDecoderSizeExceeded, got %v", err)
			}
		})
	}
	// The bound is on the window, not the output: streams much longer
	// than the window decode, also a frame that declares its size.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	var buf bytes.Buffer
	enc := must[*zstd.Encoder](t)(zstd.NewWriter(&buf, zstd.WithWindowSize(1<<20)))
	enc.Write(big)
	enc.Close()
	for name, stream := range map[string][]byte{"streamed": buf.Bytes(), "sized": enc.EncodeAll(big, nil)} {
		dec, err := decompress(bytes.NewReader(stream), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, dec); err != nil || n != int64(len(big)) {
			t.Errorf("%s: 16 MiB with a 1 MiB window: %d bytes, %v", name, n, err)
		}
		dec.Close()
	}
}

func TestUnpackLayerRefusesHugeZstdWindow(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	s := newStore(t, nil)
	frame := zstdFrame(0x00, []byte{18 << 3}, manyEntriesTar(t, 1))
	d := digest.FromBytes(frame)
	err := s.unpackLayer(context.Background(), Layer{Digest: d, DiffID: d, ChainID: d}, bytes.NewReader(frame))
	t.Logf("error: %v", err)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "image.unpack.zstd_max_window") {
		t.Fatalf("want InvalidArgument naming the layer and the limit, got %v", err)
	}
	for _, sub := range []string{"layers/tmp", "layers/sha256"} {
		if got := entries(t, s, sub); len(got) != 0 {
			t.Errorf("%s left %v", sub, got)
		}
	}
}
