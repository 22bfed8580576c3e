package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
	"github.com/runclet/runclet/runtime/config"
)

// whyRoot is why most tests here need root.
const whyRoot = "layers are unpacked with their real owners, device nodes and trusted.* xattrs"

func newStore(t testing.TB, regs map[string]config.Registry) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{Registries: regs})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func configDigest(t testing.TB, img v1.Image) digest.Digest {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

func manifestDigest(t testing.TB, img v1.Image) digest.Digest {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// entries lists a store subdirectory, for "nothing was left behind" checks.
func entries(t testing.TB, s *Store, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), sub))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestPullByTagAndDigest(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	src := must[v1.Image](t)(testimage.MultiLayer())
	must[v1.Hash](t)(reg.Push("test/multi:v1", src))
	s := newStore(t, nil)
	ref := reg.Host() + "/test/multi:v1"

	img, err := s.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != configDigest(t, src) || img.ManifestDigest != manifestDigest(t, src) {
		t.Fatalf("pulled %s (manifest %s), pushed config %s manifest %s", img.ID, img.ManifestDigest, configDigest(t, src), manifestDigest(t, src))
	}
	if len(img.Layers) != 3 {
		t.Fatalf("%d layers, want 3", len(img.Layers))
	}
	wantDigest := reg.Host() + "/test/multi@" + manifestDigest(t, src).String()
	if len(img.RepoTags) != 1 || img.RepoTags[0] != ref || len(img.RepoDigests) != 1 || img.RepoDigests[0] != wantDigest {
		t.Fatalf("names: tags %v digests %v", img.RepoTags, img.RepoDigests)
	}
	dirs := must[[]string](t)(s.LayerDirs(img))
	if len(dirs) != 3 {
		t.Fatalf("layer dirs %v", dirs)
	}
	if data := must[[]byte](t)(s.ReadImageFile(img, "/data/c.txt")); len(data) == 0 {
		t.Fatal("/data/c.txt empty")
	}
	cfg := must[*ocispecImage](t)(s.Config(img))
	if cfg.Config.WorkingDir != "/data" || cfg.Config.StopSignal != "SIGQUIT" || cfg.Config.Labels["org.runclet.test"] != "multilayer" {
		t.Fatalf("config not as built: %+v", cfg.Config)
	}

	byDigest, err := s.Pull(context.Background(), wantDigest, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if byDigest.ID != img.ID || len(byDigest.RepoTags) != 1 {
		t.Fatalf("pull by digest: %+v", byDigest)
	}
	for _, name := range []string{ref, wantDigest, img.ID.String(), img.ID.Encoded()[:12], img.ManifestDigest.String()} {
		got, err := s.Get(name)
		if err != nil || got.ID != img.ID {
			t.Errorf("Get(%s) = %v, %v", name, got.ID, err)
		}
	}
	if _, err := s.Get(reg.Host() + "/test/multi:v2"); !errdefs.IsNotFound(err) {
		t.Fatalf("unknown tag: %v", err)
	}
	if u := must[Usage](t)(s.Usage()); u.Bytes < img.Size || u.Inodes < 10 {
		t.Fatalf("usage %+v for an image of %d bytes", u, img.Size)
	}
}

func TestPullResolvesIndexToThisPlatform(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	idx := must[v1.ImageIndex](t)(testimage.Index())
	must[v1.Hash](t)(reg.PushIndex("test/multiarch:latest", idx))
	s := newStore(t, nil)
	img, err := s.Pull(context.Background(), reg.Host()+"/test/multiarch", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := must[[]byte](t)(s.ReadImageFile(img, "/platform"))
	if want := "linux/" + runtime.GOARCH; string(bytes.TrimSpace(got)) != want {
		t.Fatalf("/platform = %q, want %q", got, want)
	}
	idxDigest, _ := idx.Digest()
	if img.IndexDigest.String() != idxDigest.String() || img.RepoDigests[0] != reg.Host()+"/test/multiarch@"+idxDigest.String() {
		t.Fatalf("index digest %s, repo digests %v; pushed index %s", img.IndexDigest, img.RepoDigests, idxDigest)
	}
}

func TestPullTriesMirrorsInOrderThenUpstream(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	upstream, broken, mirror := testregistry.StartTB(t), testregistry.StartTB(t), testregistry.StartTB(t)
	src := must[v1.Image](t)(testimage.Busybox())
	must[v1.Hash](t)(mirror.Push("library/busybox:1", src))
	broken.FailAll(true)
	s := newStore(t, map[string]config.Registry{
		upstream.Host(): {Mirrors: []string{"http://" + broken.Host(), "http://" + mirror.Host()}},
	})
	ref := upstream.Host() + "/library/busybox:1"
	img, err := s.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.RepoTags[0] != ref {
		t.Fatalf("a mirror must not rename the image: tags %v", img.RepoTags)
	}
	if broken.Requests("/v2/") == 0 || upstream.Requests("/v2/") != 0 {
		t.Fatalf("requests: broken mirror %d, upstream %d; want >0 and 0", broken.Requests("/v2/"), upstream.Requests("/v2/"))
	}

	// An image no mirror has comes from the host itself.
	other := must[v1.Image](t)(testimage.WithUser(src, "1000"))
	must[v1.Hash](t)(upstream.Push("library/other:1", other))
	if _, err := s.Pull(context.Background(), upstream.Host()+"/library/other:1", PullOptions{}); err != nil {
		t.Fatalf("fallback to upstream: %v", err)
	}
	_, err = s.Pull(context.Background(), upstream.Host()+"/library/absent:1", PullOptions{})
	if err == nil {
		t.Fatal("absent image pulled")
	}
}

func TestPullNotFound(t *testing.T) {
	reg := testregistry.StartTB(t)
	s := newStore(t, nil)
	_, err := s.Pull(context.Background(), reg.Host()+"/nope:latest", PullOptions{})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("want NotFound, got %v", err)
	}
}

func TestConcurrentPullsFetchEachLayerOnce(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	src := must[v1.Image](t)(testimage.MultiLayer())
	must[v1.Hash](t)(reg.Push("test/multi:v1", src))
	s := newStore(t, nil)
	// A second Store on the same root stands in for a second process.
	s2, err := Open(filepath.Dir(s.Dir()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = s2
			}
			_, errs[i] = st.Pull(context.Background(), reg.Host()+"/test/multi:v1", PullOptions{})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	layers := must[[]v1.Layer](t)(src.Layers())
	for _, l := range layers {
		d, _ := l.Digest()
		if n := reg.RequestsWithMethod("GET", "/blobs/"+d.String()); n != 1 {
			t.Errorf("layer %s fetched %d times, want 1", d, n)
		}
	}
	if imgs := must[[]Image](t)(s.List()); len(imgs) != 1 {
		t.Fatalf("%d images after concurrent pulls of one", len(imgs))
	}
}

func TestCorruptBlobIsRejectedAndNothingStays(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	src := must[v1.Image](t)(testimage.MultiLayer())
	must[v1.Hash](t)(reg.Push("test/multi:v1", src))
	layers := must[[]v1.Layer](t)(src.Layers())
	bad, _ := layers[2].Digest()
	reg.CorruptBlob(bad.String())
	s := newStore(t, nil)
	_, err := s.Pull(context.Background(), reg.Host()+"/test/multi:v1", PullOptions{})
	if err == nil {
		t.Fatal("corrupted layer accepted")
	}
	if !bytes.Contains([]byte(err.Error()), []byte(bad.Hex)) {
		t.Fatalf("error does not name the layer %s: %v", bad, err)
	}
	if s.hasBlob(digest.Digest(bad.String()), -1) {
		t.Fatal("corrupted blob stored")
	}
	if got := entries(t, s, "ingest"); len(got) != 0 {
		t.Fatalf("ingest left %v", got)
	}
	if got := entries(t, s, "layers/tmp"); len(got) != 0 {
		t.Fatalf("partial layers left %v", got)
	}
	if imgs := must[[]Image](t)(s.List()); len(imgs) != 0 {
		t.Fatalf("image recorded despite a bad layer: %v", imgs)
	}
}

func TestTagAndRemoveSemantics(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	src := must[v1.Image](t)(testimage.Busybox())
	must[v1.Hash](t)(reg.Push("library/busybox:a", src))
	s := newStore(t, nil)
	a := reg.Host() + "/library/busybox:a"
	img := must[Image](t)(s.Pull(context.Background(), a, PullOptions{}))
	must[Image](t)(s.Tag(a, "example.com/other:b"))
	must[Image](t)(s.Tag(a, "example.com/third:c"))

	must[Image](t)(s.Remove(a, RemoveOptions{}))
	left := must[Image](t)(s.Get(img.ID.String()))
	if len(left.RepoTags) != 2 || left.RepoTags[0] != "example.com/other:b" {
		t.Fatalf("removing one tag: left %v", left.RepoTags)
	}
	if len(entries(t, s, "blobs/sha256")) == 0 || len(entries(t, s, "layers/sha256")) == 0 {
		t.Fatal("removing a tag freed the image's content")
	}
	if _, err := s.Get(a); !errdefs.IsNotFound(err) {
		t.Fatalf("removed tag still resolves: %v", err)
	}
	// By ID: the image goes with all its names, and GC frees everything.
	must[Image](t)(s.Remove(img.ID.Encoded()[:12], RemoveOptions{}))
	if imgs := must[[]Image](t)(s.List()); len(imgs) != 0 {
		t.Fatalf("images left: %v", imgs)
	}
	if b, l := entries(t, s, "blobs/sha256"), entries(t, s, "layers/sha256"); len(b)+len(l) != 0 {
		t.Fatalf("left after removal: blobs %v layers %v", b, l)
	}
	if _, err := s.Remove("example.com/other:b", RemoveOptions{}); !errdefs.IsNotFound(err) {
		t.Fatalf("removing a gone image: %v", err)
	}
}

func TestGCKeepsReferencedAndInUseAndRemovesDebris(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	busy := must[v1.Image](t)(testimage.Busybox())
	multi := must[v1.Image](t)(testimage.MultiLayer())
	must[v1.Hash](t)(reg.Push("a:1", busy))
	must[v1.Hash](t)(reg.Push("b:1", multi))
	s := newStore(t, nil)
	must[Image](t)(s.Pull(context.Background(), reg.Host()+"/a:1", PullOptions{}))
	mimg := must[Image](t)(s.Pull(context.Background(), reg.Host()+"/b:1", PullOptions{}))

	// A pod still stacks the multilayer image's top layer.
	top := mimg.Layers[2].ChainID
	s.InUse = func() ([]Use, error) { return []Use{{Pod: "p", Chains: []digest.Digest{top}}}, nil }
	before := len(entries(t, s, "blobs/sha256"))
	if _, err := s.Remove(mimg.ID.String(), RemoveOptions{}); err != nil { // runs GC
		t.Fatal(err)
	}
	// Debris as a crash mid-pull leaves it.
	os.WriteFile(filepath.Join(s.Dir(), "ingest", "deadbeef-123"), []byte("partial"), 0o600)
	os.MkdirAll(filepath.Join(s.Dir(), "layers", "tmp", "cafe-1", "diff", "etc"), 0o755)
	st := must[GCStats](t)(s.GC(context.Background()))
	if st.Debris != 2 {
		t.Fatalf("debris removed %d, want 2 (stats %+v)", st.Debris, st)
	}
	if len(entries(t, s, "ingest")) != 0 || len(entries(t, s, "layers/tmp")) != 0 {
		t.Fatal("debris left")
	}
	if !s.hasLayer(top) {
		t.Fatal("GC removed a layer a pod uses")
	}
	if s.hasLayer(mimg.Layers[1].ChainID) {
		t.Fatal("GC kept an unreferenced layer")
	}
	if after := len(entries(t, s, "blobs/sha256")); after >= before {
		t.Fatalf("no blobs freed: %d before, %d after", before, after)
	}
	// The busybox image is untouched and still complete.
	img := must[Image](t)(s.Get(reg.Host() + "/a:1"))
	must[[]string](t)(s.LayerDirs(img))
	must[[]byte](t)(s.ReadImageFile(img, "/etc/passwd"))
}

func TestImportExportRoundTrip(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	multi := must[v1.Image](t)(testimage.MultiLayer())
	for _, format := range []string{"docker", "oci"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "in.tar")
			var err error
			if format == "docker" {
				err = testimage.WriteDockerArchive(in, map[string]v1.Image{"example.com/multi:v1": multi})
			} else {
				err = testimage.WriteOCIArchive(in, map[string]v1.Image{"example.com/multi:v1": multi})
			}
			if err != nil {
				t.Fatal(err)
			}
			s := newStore(t, nil)
			f := must[*os.File](t)(os.Open(in))
			imgs, err := s.Import(context.Background(), f, nil)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 1 || imgs[0].ID != configDigest(t, multi) || imgs[0].RepoTags[0] != "example.com/multi:v1" {
				t.Fatalf("imported %+v", imgs)
			}
			if data := must[[]byte](t)(s.ReadImageFile(imgs[0], "/data/dir/b.txt")); len(data) == 0 {
				t.Fatal("layer content missing after import")
			}

			var out1, out2 bytes.Buffer
			if err := s.Export(context.Background(), &out1, []string{"example.com/multi:v1"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Export(context.Background(), &out2, []string{"example.com/multi:v1"}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out1.Bytes(), out2.Bytes()) {
				t.Fatal("two exports of one image differ")
			}
			s2 := newStore(t, nil)
			again, err := s2.Import(context.Background(), bytes.NewReader(out1.Bytes()), nil)
			if err != nil {
				t.Fatal(err)
			}
			if again[0].ManifestDigest != imgs[0].ManifestDigest || again[0].ID != imgs[0].ID || again[0].RepoTags[0] != "example.com/multi:v1" {
				t.Fatalf("round trip changed the image: %+v vs %+v", again[0], imgs[0])
			}
		})
	}
}

func TestImportRefusesHostileArchives(t *testing.T) {
	for name, members := range map[string][]tarMember{
		"traversal":      {{name: "../../escape.json", body: "{}"}},
		"absolute":       {{name: "/etc/escape.json", body: "{}"}},
		"symlink-out":    {{name: "layer.tar", link: "../../../etc/shadow"}, {name: "manifest.json", body: "[]"}},
		"device":         {{name: "dev", dev: true}},
		"wrong-digest":   {{name: "blobs/sha256/" + digest.FromString("x").Encoded(), body: "not x"}},
		"not-an-archive": {{name: "hello.txt", body: "hi"}},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t, nil)
			_, err := s.Import(context.Background(), bytes.NewReader(buildTar(t, members)), nil)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("want InvalidArgument, got %v", err)
			}
			if got := entries(t, s, "ingest"); len(got) != 0 {
				t.Fatalf("ingest left %v", got)
			}
		})
	}
}
