package testimage

import (
	"archive/tar"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// errNoLayers is returned by Random for a non-positive layer count.
var errNoLayers = errors.New("testimage.Random: need at least one layer")

// randomFileSize caps the files of a Random layer, so a big layer looks like
// many ordinary files rather than one huge one.
const randomFileSize = 1 << 20

// Random returns a pseudo-random image for benchmarks: layers layers, each
// holding about layerSize bytes of incompressible data in files of at most
// 1 MiB under /random/layer-NNN/. The content is seeded by the layer number
// and the size, so the image is the same on every call and every host.
//
// The layers are not held in memory: their tar streams are regenerated from
// the seed each time they are read (and gzipped again, at gzip.BestSpeed),
// so multi-gigabyte images cost CPU, not RAM. Building the image reads every
// layer twice to compute its digests. The image has no shell or binary;
// it is for pull, import and unpack benchmarks, not for running.
func Random(layers int, layerSize int64) (v1.Image, error) {
	if layers <= 0 {
		return nil, errNoLayers
	}
	if layerSize < 0 {
		return nil, fmt.Errorf("testimage.Random: negative layer size %d", layerSize)
	}
	img, err := baseImage(runtime.GOARCH, v1.Config{
		Labels: map[string]string{LabelTest: "random"},
	})
	if err != nil {
		return nil, err
	}
	for i := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(writeRandomTar(pw, i, layerSize)) }()
			return pr, nil
		}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("creating random layer %d: %w", i, err)
		}
		img, err = appendLayer(img, fmt.Sprintf("random layer %d of %d bytes", i, layerSize), l)
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

// writeRandomTar writes the uncompressed tar stream of Random's layer n.
func writeRandomTar(w io.Writer, n int, size int64) error {
	var seed [32]byte
	copy(seed[:], "runclet testimage random layer")
	binary.LittleEndian.PutUint64(seed[16:], uint64(n))
	binary.LittleEndian.PutUint64(seed[24:], uint64(size))
	// ChaCha8's output for a seed is fixed by its specification, so the
	// bytes do not change between Go releases.
	rng := rand.NewChaCha8(seed)

	tw := tar.NewWriter(w)
	layerDir := fmt.Sprintf("random/layer-%03d/", n)
	for _, d := range []string{"random/", layerDir} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: Epoch}); err != nil {
			return fmt.Errorf("writing random layer %d: %w", n, err)
		}
	}
	for i := 0; size > 0; i++ {
		sz := min(size, randomFileSize)
		size -= sz
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     fmt.Sprintf("%sfile-%05d", layerDir, i),
			Mode:     0o644,
			Size:     sz,
			ModTime:  Epoch,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing random layer %d: %w", n, err)
		}
		if _, err := io.CopyN(tw, rng, sz); err != nil {
			return fmt.Errorf("writing random layer %d: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing random layer %d: %w", n, err)
	}
	return nil
}
