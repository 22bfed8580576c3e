package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	sparseSize = 10 << 30 // 10 GiB
	dataOff    = 5 << 30  // where the 4 KiB of data sit
)

var sparseData = bytes.Repeat([]byte("runclet!"), 512) // 4 KiB

// ustarHeader is a raw ustar header block: archive/tar's writer drops GNU
// sparse PAX records and cannot write an 'x' header by hand.
func ustarHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", 1_600_000_000))
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func paxRecord(k, v string) string {
	rec := " " + k + "=" + v + "\n"
	n := len(rec)
	for {
		l := len(strconv.Itoa(n)) + len(rec)
		if l == n {
			return strconv.Itoa(n) + rec
		}
		n = l
	}
}

// paxSparseTar is a layer with one GNU sparse 1.0 (PAX) file "big" of
// sparseSize bytes whose only data is sparseData at dataOff, the format
// `tar --sparse --format=pax` writes.
func paxSparseTar() []byte {
	var out []byte
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", "big") + paxRecord("GNU.sparse.realsize", strconv.Itoa(sparseSize))
	out = append(out, ustarHeader("PaxHeaders.0/big", 'x', int64(len(recs)))...)
	out = append(out, pad512([]byte(recs))...)
	sparseMap := pad512([]byte(fmt.Sprintf("2\n%d\n%d\n%d\n0\n", dataOff, len(sparseData), sparseSize)))
	out = append(out, ustarHeader("GNUSparseFile.0/big", '0', int64(len(sparseMap)+len(sparseData)))...)
	out = append(out, sparseMap...)
	out = append(out, pad512(sparseData)...)
	return append(out, make([]byte, 1024)...)
}

// denseZerosTar streams a plain tar with one file "big" of sparseSize
// bytes, zeros but for sparseData at dataOff: what `docker build` makes of
// a sparse file. It is generated on the fly, never held in memory.
func denseZerosTar() io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: sparseSize, ModTime: defaultMtime})
		zeros := make([]byte, 1<<20)
		for off := int64(0); err == nil && off < sparseSize; {
			chunk := zeros
			if off == dataOff {
				chunk = sparseData
			} else if off < dataOff && off+int64(len(chunk)) > dataOff {
				chunk = chunk[:dataOff-off]
			} else if off+int64(len(chunk)) > sparseSize {
				chunk = chunk[:sparseSize-off]
			}
			_, err = tw.Write(chunk)
			off += int64(len(chunk))
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func TestApplyKeepsHoles(t *testing.T) {
	for _, tc := range []struct {
		name string
		tar  func() io.Reader
	}{
		{"pax-sparse", func() io.Reader { return bytes.NewReader(paxSparseTar()) }},
		{"dense-zeros", denseZerosTar},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newLayerDir(t)
			start := time.Now()
			if _, err := Apply(context.Background(), dir, tc.tar(), testOpts()); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "big")
			st := lstat(t, p)
			t.Logf("%s: size %d, %d KiB on disk, unpacked in %v", tc.name, st.Size, st.Blocks/2, time.Since(start))
			if st.Size != sparseSize {
				t.Fatalf("size %d, want %d", st.Size, sparseSize)
			}
			if st.Blocks*512 >= 1<<20 {
				t.Fatalf("%d KiB on disk for 4 KiB of data: holes were written out", st.Blocks/2)
			}
			checkSparseContent(t, p)
		})
	}
}

// checkSparseContent checks the file's bytes without reading 10 GiB: the
// only data region SEEK_DATA finds is the block holding sparseData, which
// reads back exactly; everything else is a hole, which reads as zeros (the
// windows around the data and at both ends are read to show it).
func checkSparseContent(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	var regions [][2]int64
	for off := int64(0); off < sparseSize; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		regions = append(regions, [2]int64{data, hole})
		off = hole
	}
	if len(regions) != 1 || regions[0][0] > dataOff || regions[0][1] < dataOff+int64(len(sparseData)) || regions[0][1]-regions[0][0] > 64<<10 {
		t.Fatalf("data regions %v, want one small region around [%d, %d)", regions, dataOff, dataOff+len(sparseData))
	}
	const window = 1 << 20
	for _, start := range []int64{0, dataOff - window, dataOff, sparseSize - window} {
		buf := make([]byte, window)
		if _, err := f.ReadAt(buf, start); err != nil {
			t.Fatal(err)
		}
		if start == dataOff {
			if !bytes.Equal(buf[:len(sparseData)], sparseData) {
				t.Fatalf("data at %d differs", dataOff)
			}
			buf = buf[len(sparseData):]
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatalf("non-zero bytes in [%d, %d)", start, start+window)
		}
	}
}

// TestApplySparseEdges checks hole handling at block and buffer edges:
// files ending in a hole, holes shorter than a block, data straddling the
// buffer size, and files smaller than a block, against their exact bytes.
func TestApplySparseEdges(t *testing.T) {
	blk := func(c byte) string { return string(bytes.Repeat([]byte{c}, holeBlock)) }
	zero := func(n int) string { return string(make([]byte, n)) }
	cases := map[string]string{
		"trailing-hole":    blk('a') + zero(3*holeBlock),
		"leading-hole":     zero(2*holeBlock) + "x",
		"short-zero-run":   "a" + zero(holeBlock) + "b",
		"unaligned-zeros":  blk('a')[:100] + zero(holeBlock+200) + "z",
		"all-zero":         zero(5 * holeBlock),
		"tiny-zero":        zero(10),
		"partial-tail":     blk('a') + zero(holeBlock-1),
		"buffer-straddle":  zero(copyBufSize-holeBlock) + blk('q') + blk('r') + zero(holeBlock),
		"buffer-plus-tail": zero(copyBufSize) + "tail",
	}
	var entries []tent
	for name, body := range cases {
		entries = append(entries, file(name, body))
	}
	dir := newLayerDir(t)
	if err := applyBytes(dir, buildTar(t, entries...), testOpts()); err != nil {
		t.Fatal(err)
	}
	for name, body := range cases {
		if got := readFile(t, filepath.Join(dir, name)); got != body {
			t.Errorf("%s: content differs (len %d, want %d)", name, len(got), len(body))
		}
	}
	// A file of zeros is all hole.
	if st := lstat(t, filepath.Join(dir, "all-zero")); st.Blocks != 0 {
		t.Errorf("all-zero: %d blocks allocated, want 0", st.Blocks)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "trailing-hole"), &st); err != nil || st.Size != 4*holeBlock {
		t.Errorf("trailing-hole: size %d (%v), want %d", st.Size, err, 4*holeBlock)
	}
}
