package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// benchTars are built once per process: the benchmark function runs several
// times while the framework sizes b.N.
var benchTars = map[string]func() []byte{
	"small-files": sync.OnceValue(func() []byte { return smallFilesTar(5000, 4<<10) }),
	"large-files": sync.OnceValue(func() []byte { return largeFilesTar(4, 16<<20) }),
	"zero-files":  sync.OnceValue(func() []byte { return zeroFilesTar(4, 16<<20) }),
}

// zeroFilesTar has a few big files that are zeros but for 4 KiB every MiB,
// like preallocated databases and disk images: what hole detection is for.
func zeroFilesTar(n, size int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := make([]byte, size)
	for off := 0; off+4096 <= size; off += 1 << 20 {
		fillRandom(body[off:off+4096], uint64(off))
	}
	for i := range n {
		must(tw.WriteHeader(&tar.Header{Name: "var/db" + strconv.Itoa(i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), ModTime: defaultMtime}))
		_, err := tw.Write(body)
		must(err)
	}
	must(tw.Close())
	return buf.Bytes()
}

// smallFilesTar is a layer shaped like a distro's /usr: many small files in
// a two-level tree of directories.
func smallFilesTar(n, size int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := make([]byte, size)
	fillRandom(body, 1)
	for i := range n {
		if i%100 == 0 {
			must(tw.WriteHeader(&tar.Header{Name: benchDir(i) + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: defaultMtime}))
		}
		name := benchDir(i) + "/file" + strconv.Itoa(i)
		must(tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), ModTime: defaultMtime}))
		_, err := tw.Write(body)
		must(err)
	}
	must(tw.Close())
	return buf.Bytes()
}

func benchDir(i int) string { return fmt.Sprintf("d%02d/e%02d", i/1000, i/100%10) }

// largeFilesTar has a few big files with incompressible content, like a
// layer carrying a runtime or a model.
func largeFilesTar(n, size int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := make([]byte, size)
	for i := range n {
		fillRandom(body, uint64(i))
		must(tw.WriteHeader(&tar.Header{Name: "opt/blob" + strconv.Itoa(i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), ModTime: defaultMtime}))
		_, err := tw.Write(body)
		must(err)
	}
	must(tw.Close())
	return buf.Bytes()
}

func fillRandom(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func BenchmarkApply(b *testing.B) {
	for _, name := range []string{"small-files", "large-files", "zero-files"} {
		b.Run(name, func(b *testing.B) {
			data := benchTars[name]()
			base := b.TempDir()
			opts := Options{NoChown: os.Geteuid() != 0}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := filepath.Join(base, strconv.Itoa(i))
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				r := bytes.NewReader(data)
				b.StartTimer()
				if _, err := Apply(context.Background(), dir, r, opts); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkZeroScan is the cost of hole detection alone, per byte scanned:
// on data (the first word differs), and at worst, blocks that are zeros up
// to their last byte, so every byte is compared.
func BenchmarkZeroScan(b *testing.B) {
	random := make([]byte, copyBufSize)
	fillRandom(random, 7)
	late := make([]byte, copyBufSize)
	for i := holeBlock - 1; i < len(late); i += holeBlock {
		late[i] = 1
	}
	for name, buf := range map[string][]byte{"data": random, "late-nonzero": late} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for i := 0; i < b.N; i++ {
				for off := 0; off < len(buf); off += holeBlock {
					if isZeroBlock(buf[off : off+holeBlock]) {
						b.Fatal("zero block found")
					}
				}
			}
		})
	}
}
