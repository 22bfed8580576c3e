package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
)

// Repository paths critest v1.37.0 pulls by default (pkg/framework and
// pkg/validate), without their registry host: every host is mirrored to
// one test registry, which keeps the path.
const (
	e2e    = "e2e-test-images/"
	critoo = "k8s-staging-cri-tools/"
)

// passwd and group of the user images: the busybox ones plus www-data (the
// "Username" tests) and, as upstream's image-predefined-group builds it,
// default-user 1000:1000 with the supplementary group 50000.
const (
	usersPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
default-user:x:1000:1000:default-user:/home/default-user:/bin/sh
`
	usersGroup = `root:x:0:
daemon:x:1:
www-data:x:33:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
`
)

// nnpSource is the nonewprivs image's program, installed setuid root.
const nnpSource = `package main

import (
	"fmt"
	"os"
)

func main() { fmt.Printf("Effective uid: %d\n", os.Geteuid()) }
`

// tarEntry is one file of a layer built here; dirs end in "/".
type tarEntry struct {
	name string
	mode int64
	data []byte
}

func layer(entries ...tarEntry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: testimage.Epoch, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if e.name[len(e.name)-1] == '/' {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// derive appends a layer of entries (if any) to base and edits its config.
func derive(base v1.Image, edit func(*v1.Config), entries ...tarEntry) (v1.Image, error) {
	img := base
	if len(entries) > 0 {
		l, err := layer(entries...)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	if edit != nil {
		edit(&cf.Config)
	}
	return mutate.ConfigFile(img, cf)
}

// webServer stands in for nginx and httpd: busybox httpd on port serving
// nginx's welcome page.
func webServer(base v1.Image, port string) (v1.Image, error) {
	return derive(base, func(c *v1.Config) {
		c.Cmd = []string{"httpd", "-f", "-p", port, "-h", "/usr/share/nginx/html"}
	},
		tarEntry{name: "usr/", mode: 0o755},
		tarEntry{name: "usr/share/", mode: 0o755},
		tarEntry{name: "usr/share/nginx/", mode: 0o755},
		tarEntry{name: "usr/share/nginx/html/", mode: 0o755},
		tarEntry{name: "usr/share/nginx/html/index.html", mode: 0o644, data: []byte("<h1>Welcome to nginx!</h1>\n")},
	)
}

// pushImages builds the images critest pulls and pushes them to reg. It
// returns the references it could not provide, with why.
func pushImages(reg *testregistry.Registry) (missing []string, err error) {
	base, err := testimage.Busybox()
	if err != nil {
		return nil, err
	}
	// pause must be its own image: "removing image from one registry"
	// counts the tags of its ID.
	pause, err := derive(base, func(c *v1.Config) { c.Cmd = []string{"sleep", "2147483647"} })
	if err != nil {
		return nil, err
	}
	images := map[string]v1.Image{e2e + "busybox:1.29-2": base, "pause:3.9": pause}
	add := func(ref string, img v1.Image, err error) error {
		if err != nil {
			return fmt.Errorf("building %s: %w", ref, err)
		}
		images[ref] = img
		return nil
	}
	for ref, port := range map[string]string{
		e2e + "nginx:1.14-2":   "80",
		e2e + "httpd:2.4.39-4": "80",
		critoo + "hostnet-nginx-" + runtime.GOARCH + ":latest": "12003",
	} {
		img, err := webServer(base, port)
		if err := add(ref, img, err); err != nil {
			return nil, err
		}
	}

	nnp, err := testimage.GoBinary("nnp", nnpSource)
	if err != nil {
		return nil, err
	}
	nnpBin, err := os.ReadFile(nnp)
	if err != nil {
		return nil, err
	}
	img, err := derive(base, func(c *v1.Config) { c.Cmd = []string{"/usr/local/bin/nnp"} },
		tarEntry{name: "usr/", mode: 0o755},
		tarEntry{name: "usr/local/", mode: 0o755},
		tarEntry{name: "usr/local/bin/", mode: 0o755},
		tarEntry{name: "usr/local/bin/nnp", mode: 0o4755, data: nnpBin})
	if err := add(e2e+"nonewprivs:1.3", img, err); err != nil {
		return nil, err
	}

	users, err := derive(base, nil,
		tarEntry{name: "etc/", mode: 0o755},
		tarEntry{name: "etc/passwd", mode: 0o644, data: []byte(usersPasswd)},
		tarEntry{name: "etc/group", mode: 0o644, data: []byte(usersGroup)})
	if err != nil {
		return nil, err
	}
	for name, user := range map[string]string{
		"test-image-user-uid":            "1002",
		"test-image-user-username":       "www-data",
		"test-image-user-uid-group":      "1003:1003",
		"test-image-user-username-group": "www-data:www-data",
		"test-image-predefined-group":    "1000",
	} {
		img, err := derive(users, func(c *v1.Config) { c.User = user })
		if err := add(critoo+name+":latest", img, err); err != nil {
			return nil, err
		}
	}

	// Upstream's image-test: busybox plus a file named after the image, so
	// each name is a different image; test-image-tags:1/2/3 are one image.
	for ref, file := range map[string]string{
		"test-image-latest:latest": "test-image-latest",
		"test-image-tag:test":      "test-image-tag",
		"test-image-tag:all":       "test-image-tag",
		"test-image-1:latest":      "test-image-1",
		"test-image-2:latest":      "test-image-2",
		"test-image-3:latest":      "test-image-3",
		"test-image-tags:1":        "test-image-tags",
		"test-image-tags:2":        "test-image-tags",
		"test-image-tags:3":        "test-image-tags",
	} {
		img, err := derive(base, nil, tarEntry{name: file, mode: 0o644, data: []byte(file + "\n")})
		if err := add(critoo+ref, img, err); err != nil {
			return nil, err
		}
	}

	for ref, img := range images {
		if _, err := reg.Push(ref, img); err != nil {
			return nil, err
		}
	}
	missing = append(missing,
		"gcr.io/"+critoo+"test-image-digest@sha256:9700f9a2… (a fixed upstream digest; cannot be rebuilt)")
	return missing, nil
}
