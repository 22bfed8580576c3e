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
	for _, name := range []string{"small-files", "large-files"} {
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
