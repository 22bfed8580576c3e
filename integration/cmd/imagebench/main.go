// Command imagebench compares runclet's image pull and unpack with the
// standard peer tools doing the same work, skopeo (download into an OCI
// layout) and umoci (unpack that layout into a bundle), measured in the same
// run on the same machine.
//
//	sudo go run ./integration/cmd/imagebench [-runs 5] [-runclet bin/runclet] [-json] [-images random,files,multilayer]
//
// It serves three images from an in-process registry on 127.0.0.1:
// "random" (three ~32 MiB incompressible layers), "files" (one gzip layer of
// 5000 compressible 4 KiB files in nested directories) and "multilayer"
// (testimage.MultiLayer: busybox plus two small layers). For each image and
// run, in fresh directories under one temporary directory in /var/tmp, it
// times the wall clock of:
//
//   - pull: "runclet image pull" (download, verify, decompress, unpack every
//     layer into the store) against "skopeo copy" to an OCI layout followed
//     by "umoci unpack" of that layout; skopeo and umoci are also reported
//     alone.
//   - unpack: "runclet image import" of an OCI layout tarball of the same
//     image (verify, decompress, unpack without the network) against the
//     "umoci unpack" timed above.
//
// Every run's output is kept until the end (about 600 MB per run of
// "random"): deleting thousands of files makes the file creations of the
// next half minute slow on some filesystems (ext4 without a journal scans
// past recently deleted inodes), which would time the cleanup, not the tools.
//
// Runs alternate between runclet and its peer (runclet pull, skopeo copy,
// runclet import, umoci unpack, and again) so that load noise, background
// writeback and the page cache hit both sides alike instead of favouring
// whichever ran its N runs second. Caches are never dropped system-wide;
// every command instead starts after a sync(2), so it does not pay for the
// previous command's dirty pages. The table gives the median and minimum of
// each side, the ratio of the peer's median to runclet's (above 1 means
// runclet is faster) and throughput in MB/s (10^6 bytes per second): over the
// compressed size (config + layer blobs) for pulls and skopeo, over the
// uncompressed layer tars for unpacks.
//
// It needs root (both sides restore file ownership) and skopeo and umoci
// (Debian: apt-get install skopeo umoci). Any failing command stops it with
// the command's stderr and a non-zero exit; temporary directories and the
// registry are always cleaned up.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebench:", err)
		os.Exit(1)
	}
}

// benchImage is one image under test.
type benchImage struct {
	name  string
	build func() (v1.Image, error)
}

var benchImages = []benchImage{
	{"random", func() (v1.Image, error) { return testimage.Random(3, 32<<20) }},
	{"files", filesImage},
	{"multilayer", testimage.MultiLayer},
}

// Stats summarizes the wall times of one command over all runs.
type Stats struct {
	Median  time.Duration   `json:"median_ns"`
	Min     time.Duration   `json:"min_ns"`
	MBps    float64         `json:"mb_per_s"` // bytes / median
	Samples []time.Duration `json:"samples_ns"`
}

// Row is one line of the report: an operation on an image, runclet against
// its peer. Runclet is nil for rows that only break the peer down.
type Row struct {
	Image     string  `json:"image"`
	Operation string  `json:"operation"`
	Bytes     int64   `json:"bytes"` // what MB/s is computed over
	Runclet   *Stats  `json:"runclet,omitempty"`
	Peer      string  `json:"peer"`
	PeerStats *Stats  `json:"peer_stats"`
	Ratio     float64 `json:"peer_over_runclet,omitempty"` // peer median / runclet median
}

// Report is everything -json prints.
type Report struct {
	Runs     int               `json:"runs"`
	Versions map[string]string `json:"versions"`
	Rows     []Row             `json:"rows"`
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("imagebench", flag.ContinueOnError)
	runs := fs.Int("runs", 5, "timed runs per image and command")
	runclet := fs.String("runclet", "bin/runclet", "runclet `binary`; built into a temporary directory if missing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	only := fs.String("images", "random,files,multilayer", "comma-separated `list` of images to benchmark")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var selected []benchImage
	for _, name := range strings.Split(*only, ",") {
		i := slices.IndexFunc(benchImages, func(b benchImage) bool { return b.name == name })
		if i < 0 {
			return fmt.Errorf("-images: unknown image %q (want random, files or multilayer)", name)
		}
		selected = append(selected, benchImages[i])
	}
	if *runs < 1 {
		return fmt.Errorf("-runs %d: need at least 1", *runs)
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: runclet and umoci restore file ownership when unpacking")
	}
	for _, tool := range []string{"skopeo", "umoci"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found in PATH; install it (Debian: apt-get install -y skopeo umoci)", tool)
		}
	}

	tmp, err := os.MkdirTemp("/var/tmp", "imagebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bin, err := findRunclet(ctx, *runclet, tmp)
	if err != nil {
		return err
	}
	reg, err := testregistry.Start()
	if err != nil {
		return err
	}
	defer reg.Close()

	rep := Report{Runs: *runs, Versions: map[string]string{}}
	for name, argv := range map[string][]string{"runclet": {bin, "--version"}, "skopeo": {"skopeo", "--version"}, "umoci": {"umoci", "--version"}} {
		out, err := runCmd(ctx, argv...)
		if err != nil {
			return err
		}
		rep.Versions[name] = strings.TrimSpace(out)
	}

	for _, bi := range selected {
		rows, err := benchOne(ctx, reg, bin, tmp, bi, *runs)
		if err != nil {
			return fmt.Errorf("%s: %w", bi.name, err)
		}
		rep.Rows = append(rep.Rows, rows...)
	}

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printTable(os.Stdout, rep)
	return nil
}

// findRunclet returns the absolute path of the runclet binary, building it
// into dir when path does not exist.
func findRunclet(ctx context.Context, path, dir string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return filepath.Abs(path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	bin := filepath.Join(dir, "runclet")
	fmt.Fprintf(os.Stderr, "%s does not exist: building %s\n", path, bin)
	if _, err := runCmd(ctx, "go", "build", "-o", bin, "./cmd/runclet"); err != nil {
		return "", err
	}
	return bin, nil
}

// benchOne pushes one image, writes its archive and times every command
// runs times, alternating runclet and peer.
func benchOne(ctx context.Context, reg *testregistry.Registry, bin, tmp string, bi benchImage, runs int) ([]Row, error) {
	fmt.Fprintf(os.Stderr, "%s: building and pushing\n", bi.name)
	img, err := bi.build()
	if err != nil {
		return nil, err
	}
	compressed, uncompressed, err := sizes(img)
	if err != nil {
		return nil, err
	}
	repoTag := "bench/" + bi.name + ":latest"
	if _, err := reg.Push(repoTag, img); err != nil {
		return nil, err
	}
	ref := reg.Ref(repoTag)
	archive := filepath.Join(tmp, bi.name+".tar")
	if err := testimage.WriteOCIArchive(archive, map[string]v1.Image{"bench.local/" + repoTag: img}); err != nil {
		return nil, err
	}
	defer os.Remove(archive)

	// Run outputs stay until the whole benchmark is over (see the package
	// comment); the caller removes tmp.
	runsDir, err := os.MkdirTemp(tmp, bi.name+"-")
	if err != nil {
		return nil, err
	}
	// The benchmark's registry is on 127.0.0.1: its images are pulled
	// unchecked (the trust policy's default refuses unsigned images).
	cfgPath := filepath.Join(tmp, "runclet.toml")
	if err := os.WriteFile(cfgPath, []byte("[[trust.rules]]\nprefix = \"127.0.0.1\"\naction = \"accept\"\n"), 0o644); err != nil {
		return nil, err
	}
	var pull, imp, skopeo, umoci, peerPull []time.Duration
	for i := range runs {
		fmt.Fprintf(os.Stderr, "%s: run %d/%d\n", bi.name, i+1, runs)
		dir := filepath.Join(runsDir, fmt.Sprint(i))
		store := func(name string) []string {
			return []string{bin, "--config", cfgPath, "--root", filepath.Join(dir, name, "root"), "--run-root", filepath.Join(dir, name, "run")}
		}
		layout := filepath.Join(dir, "layout") + ":tag"
		steps := []struct {
			into *[]time.Duration
			argv []string
		}{
			{&pull, append(store("pull"), "image", "pull", "-q", ref)},
			{&skopeo, []string{"skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + ref, "oci:" + layout}},
			{&imp, append(store("import"), "image", "import", archive)},
			{&umoci, []string{"umoci", "unpack", "--image", layout, filepath.Join(dir, "bundle")}},
		}
		for _, s := range steps {
			d, err := timeCmd(ctx, s.argv...)
			if err != nil {
				return nil, err
			}
			*s.into = append(*s.into, d)
		}
		peerPull = append(peerPull, skopeo[i]+umoci[i])
	}

	pullStats, peerPullStats := stats(pull, compressed), stats(peerPull, compressed)
	impStats, umociStats := stats(imp, uncompressed), stats(umoci, uncompressed)
	return []Row{
		{Image: bi.name, Operation: "pull", Bytes: compressed, Runclet: pullStats,
			Peer: "skopeo copy + umoci unpack", PeerStats: peerPullStats, Ratio: ratio(peerPullStats, pullStats)},
		{Image: bi.name, Operation: "  download only", Bytes: compressed,
			Peer: "skopeo copy", PeerStats: stats(skopeo, compressed)},
		{Image: bi.name, Operation: "unpack", Bytes: uncompressed, Runclet: impStats,
			Peer: "umoci unpack", PeerStats: umociStats, Ratio: ratio(umociStats, impStats)},
	}, nil
}

// timeCmd runs argv after a sync(2) and returns its wall time.
func timeCmd(ctx context.Context, argv ...string) (time.Duration, error) {
	syscall.Sync()
	start := time.Now()
	_, err := runCmd(ctx, argv...)
	return time.Since(start), err
}

// runCmd runs argv and returns its stdout; on failure the error carries
// its stderr.
func runCmd(ctx context.Context, argv ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// sizes returns the compressed size of img (config and layer blobs, what a
// pull downloads besides the manifest) and the size of its uncompressed
// layer tars (what an unpack reads).
func sizes(img v1.Image) (compressed, uncompressed int64, err error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, 0, err
	}
	compressed = m.Config.Size
	for _, l := range m.Layers {
		compressed += l.Size
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return 0, 0, err
		}
		uncompressed += n
	}
	return compressed, uncompressed, nil
}

func stats(samples []time.Duration, bytes int64) *Stats {
	s := slices.Clone(samples)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + med) / 2
	}
	return &Stats{Median: med, Min: s[0], MBps: float64(bytes) / 1e6 / med.Seconds(), Samples: samples}
}

func ratio(peer, runclet *Stats) float64 {
	return peer.Median.Seconds() / runclet.Median.Seconds()
}

func printTable(w io.Writer, rep Report) {
	fmt.Fprintf(w, "runs: %d   %s   %s   %s\n\n", rep.Runs, rep.Versions["runclet"], rep.Versions["skopeo"], rep.Versions["umoci"])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tOPERATION\tMB\tRUNCLET MEDIAN\tMIN\tMB/s\tPEER MEDIAN\tMIN\tMB/s\tPEER/RUNCLET\tPEER")
	for _, r := range rep.Rows {
		rc := "-\t-\t-"
		rt := "-"
		if r.Runclet != nil {
			rc = fmt.Sprintf("%s\t%s\t%.1f", ms(r.Runclet.Median), ms(r.Runclet.Min), r.Runclet.MBps)
			rt = fmt.Sprintf("%.2f", r.Ratio)
		}
		p := r.PeerStats
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\t%s\t%.1f\t%s\t%s\n", r.Image, r.Operation, float64(r.Bytes)/1e6,
			rc, ms(p.Median), ms(p.Min), p.MBps, rt, r.Peer)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nMB: compressed size for pull and download, uncompressed layer tars for unpack.")
	fmt.Fprintln(w, "unpack: runclet image import of an OCI layout tarball vs umoci unpack of skopeo's layout.")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }

// filesImage returns an image of one gzip layer holding 5000 files of 4 KiB
// of text-like (compressible) content in /files/dNN/dNN/, 50x10 directories
// of 10 files each: the many-small-files case, where per-file syscalls
// rather than bytes dominate unpacking.
func filesImage() (v1.Image, error) {
	words := strings.Fields("the quick brown fox jumps over a lazy dog while container runtime " +
		"image layer pulls unpack files into directories and verify every digest of blob " +
		"func return error nil if else for range struct interface package import")
	rng := rand.New(rand.NewPCG(1, 2)) // fixed seed: the same image every time
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: testimage.Epoch})
	}
	if err := dir("files/"); err != nil {
		return nil, err
	}
	content := make([]byte, 0, 4096)
	for a := range 50 {
		if err := dir(fmt.Sprintf("files/d%02d/", a)); err != nil {
			return nil, err
		}
		for b := range 10 {
			d := fmt.Sprintf("files/d%02d/d%02d/", a, b)
			if err := dir(d); err != nil {
				return nil, err
			}
			for f := range 10 {
				content = content[:0]
				for len(content) < 4096 {
					content = append(content, words[rng.IntN(len(words))]...)
					content = append(content, " \n"[rng.IntN(8)/7])
				}
				content = content[:4096]
				hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sfile-%02d.txt", d, f), Mode: 0o644, Size: 4096, ModTime: testimage.Epoch}
				if err := tw.WriteHeader(hdr); err != nil {
					return nil, err
				}
				if _, err := tw.Write(content); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	blob := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: goruntime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: testimage.Epoch},
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, layer)
}
