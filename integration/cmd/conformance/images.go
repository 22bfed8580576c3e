package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
)

// The images of test/utils/image/manifest.go (Kubernetes v1.37.2) the
// [sig-node] Conformance tests run, built here and served by the local
// registry under the same repository paths. The e2e framework is pointed
// at it with KUBE_TEST_REPO_LIST (repoList). docs/conformance.md says
// which are the real program and which are stand-ins.
const (
	e2eRepo = "e2e-test-images"
)

// repoList is the KUBE_TEST_REPO_LIST file: every registry the manifest
// names except the invalid one (whose pulls must fail) maps to the local
// registry.
func repoList(reg string) string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"promoterE2eRegistry", reg + "/" + e2eRepo},
		{"buildImageRegistry", reg + "/build-image"},
		{"gcEtcdRegistry", reg},
		{"gcRegistry", reg},
		{"sigStorageRegistry", reg + "/sig-storage"},
		{"privateRegistry", reg + "/k8s-authenticated-test"},
		{"dockerLibraryRegistry", reg + "/library"},
		{"cloudProviderGcpRegistry", reg + "/cloud-provider-gcp"},
	} {
		fmt.Fprintf(&b, "%s: %s\n", kv[0], kv[1])
	}
	return b.String()
}

// tfile is a file of a layer built here.
type tfile struct {
	name string
	mode int64
	data []byte
	link string // symlink target when set
	dir  bool
}

func layerOf(files ...tfile) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(0, 0)
	for _, f := range files {
		h := &tar.Header{Name: strings.TrimPrefix(f.name, "/"), Mode: f.mode, ModTime: mt, Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag = tar.TypeDir
		case f.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
}

func withLayer(base v1.Image, files ...tfile) (v1.Image, error) {
	l, err := layerOf(files...)
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(base, l)
}

func withConfig(base v1.Image, edit func(*v1.Config)) (v1.Image, error) {
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	edit(&cf.Config)
	return mutate.ConfigFile(base, cf)
}

// buildImages builds the images from Debian's busybox-static, the agnhost
// and nnp binaries built from k8s.io/kubernetes (binDir) and the files of
// its test/images (k8sSrc), and pushes them to reg.
func buildImages(reg *testregistry.Registry, binDir, k8sSrc string) error {
	read := func(p string) ([]byte, error) { return os.ReadFile(p) }
	busybox, err := testimage.Busybox()
	if err != nil {
		return fmt.Errorf("busybox image: %w", err)
	}
	agnhostBin, err := read(filepath.Join(binDir, "agnhost"))
	if err != nil {
		return err
	}
	crt, err := read(filepath.Join(k8sSrc, "test/images/agnhost/porter/localhost.crt"))
	if err != nil {
		return err
	}
	key, err := read(filepath.Join(k8sSrc, "test/images/agnhost/porter/localhost.key"))
	if err != nil {
		return err
	}
	// agnhost: the real program on busybox instead of alpine, with the
	// files and users its Dockerfile adds.
	agnhost, err := withLayer(busybox,
		tfile{name: "agnhost", mode: 0o755, data: agnhostBin},
		tfile{name: "agnhost-2", link: "agnhost"},
		tfile{name: "uploads", mode: 0o755, dir: true},
		tfile{name: "localhost.crt", mode: 0o644, data: crt},
		tfile{name: "localhost.key", mode: 0o644, data: key},
		tfile{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n")},
		tfile{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n")},
	)
	if err != nil {
		return err
	}
	curl, err := testimage.GoProgram("curl", curlSrc)
	if err != nil {
		return fmt.Errorf("curl stand-in: %w", err)
	}
	if agnhost, err = mutate.AppendLayers(agnhost, curl); err != nil {
		return err
	}
	if agnhost, err = withConfig(agnhost, func(c *v1.Config) {
		c.Entrypoint, c.Cmd = []string{"/agnhost"}, []string{"pause"}
		c.ExposedPorts = map[string]struct{}{"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}, "5000/tcp": {}}
	}); err != nil {
		return err
	}
	nnpBin, err := read(filepath.Join(binDir, "nnp"))
	if err != nil {
		return err
	}
	nonewprivs, err := withLayer(busybox, tfile{name: "usr", mode: 0o755, dir: true}, tfile{name: "usr/local", mode: 0o755, dir: true},
		tfile{name: "usr/local/bin", mode: 0o755, dir: true}, tfile{name: "usr/local/bin/nnp", mode: 0o755 | 0o4000, data: nnpBin})
	if err != nil {
		return err
	}
	if nonewprivs, err = withConfig(nonewprivs, func(c *v1.Config) { c.Cmd = []string{"nnp"} }); err != nil {
		return err
	}
	nonroot, err := testimage.WithUser(busybox, "1234")
	if err != nil {
		return err
	}
	jpg, err := read(filepath.Join(k8sSrc, "test/images/kitten/html/kitten.jpg"))
	if err != nil {
		return err
	}
	js, err := read(filepath.Join(k8sSrc, "test/images/kitten/html/data.json"))
	if err != nil {
		return err
	}
	kitten, err := withLayer(agnhost, tfile{name: "kitten.jpg", mode: 0o644, data: jpg}, tfile{name: "data.json", mode: 0o644, data: js})
	if err != nil {
		return err
	}
	if kitten, err = withConfig(kitten, func(c *v1.Config) { c.Cmd = []string{"test-webserver"} }); err != nil {
		return err
	}
	// nginx stand-in: busybox httpd serving a page on port 80 in the
	// foreground; the tests that use the image only run it.
	nginx, err := withLayer(busybox,
		tfile{name: "usr", mode: 0o755, dir: true}, tfile{name: "usr/share", mode: 0o755, dir: true},
		tfile{name: "usr/share/nginx", mode: 0o755, dir: true}, tfile{name: "usr/share/nginx/html", mode: 0o755, dir: true},
		tfile{name: "usr/share/nginx/html/index.html", mode: 0o644, data: []byte("<html><body>Welcome to nginx (runclet conformance stand-in: busybox httpd)</body></html>\n")})
	if err != nil {
		return err
	}
	if nginx, err = withConfig(nginx, func(c *v1.Config) {
		c.Cmd = []string{"httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"}
		c.ExposedPorts = map[string]struct{}{"80/tcp": {}}
	}); err != nil {
		return err
	}
	// pause: agnhost's pause (the same behaviour as the C pause: wait for
	// a signal, reap children).
	pause, err := withConfig(agnhost, func(c *v1.Config) { c.Entrypoint, c.Cmd = []string{"/agnhost", "pause"}, nil })
	if err != nil {
		return err
	}
	for _, p := range []struct {
		ref string
		img v1.Image
	}{
		{e2eRepo + "/agnhost:2.66.1", agnhost},
		{e2eRepo + "/agnhost:2.55", agnhost},
		{e2eRepo + "/busybox:1.37.0-2", busybox},
		{e2eRepo + "/nonroot:1.5", nonroot},
		{e2eRepo + "/nonewprivs:1.4", nonewprivs},
		{e2eRepo + "/kitten:1.8", kitten},
		{e2eRepo + "/nginx:1.27.0-2", nginx},
		{e2eRepo + "/nginx:1.28.0-2", nginx},
		{"pause:3.10.2", pause},
		{"pause:3.10.1", pause},
		{"library/busybox:1.37", busybox},
		{"library/busybox:latest", busybox},
	} {
		if _, err := reg.Push(p.ref, p.img); err != nil {
			return fmt.Errorf("pushing %s: %w", p.ref, err)
		}
	}
	return nil
}
