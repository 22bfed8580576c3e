package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

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

// Stand-ins for the images critest pulls. All but pause are built on
// testimage.DynamicBusybox, a busybox that, like upstream busybox images,
// runs the programs PATH finds ("Security Context ... MaskedPaths" masks
// /bin/ls and expects "sh -c ls" to fail exec'ing it) and has pgrep ("execSync
// with timeout") and ipcs ("HostIpc").
//
// Upstream definitions are in cri-tools' images/ (build script, Dockerfiles)
// and kubernetes' test/images.

// predefinedGroup is what cri-tools' images/image-predefined-group adds to
// busybox: "adduser -u 1000 -D default-user" (uid 1000, own group 1000, home
// /home/default-user) and group-defined-in-image (50000) with default-user
// in it. The SupplementalGroupsPolicy specs run it as 1000 and expect
// "id -G" to print 1000 1234 50000 (Merge) or 1000 1234 (Strict).
const (
	predefinedPasswd = testimage.BusyboxPasswd +
		"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
	predefinedGroup = testimage.BusyboxGroup +
		"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
)

// userImages are cri-tools' images/image-user builds ("USER $USER" on
// busybox), from images/build. "image status get image fields should not
// have Uid|Username empty" checks the Uid/Username ImageStatus derives from
// each (1002; www-data; 1003; www-data).
var userImages = map[string]string{
	"test-image-user-uid":            "1002",
	"test-image-user-username":       "www-data",
	"test-image-user-uid-group":      "1003:1004",
	"test-image-user-username-group": "www-data:1004",
}

// testImages are cri-tools' images/image-test builds ("ADD $TEST $TEST" on
// busybox): each adds an empty file, named as below, to the root, so the
// Image Manager specs see different images where upstream has different ones
// (test-image-tag:test and :all differ; test-image-tags:1, :2 and :3 are
// one image).
var testImages = map[string]string{
	"test-image-latest:latest": "test-image-latest",
	"test-image-1:latest":      "test-image-1",
	"test-image-2:latest":      "test-image-2",
	"test-image-3:latest":      "test-image-3",
	"test-image-tag:test":      "test",
	"test-image-tag:all":       "all",
	"test-image-tags:1":        "same-image",
	"test-image-tags:2":        "same-image",
	"test-image-tags:3":        "same-image",
}

// nnpSource is the nonewprivs image's program (kubernetes
// test/images/nonewprivs), installed setuid root: the NoNewPrivs specs run
// it as uid 1000 and expect "Effective uid: 1000" or "Effective uid: 0".
const nnpSource = `package main

import (
	"fmt"
	"os"
)

func main() { fmt.Printf("Effective uid: %d\n", os.Geteuid()) }
`

// pauseSource is the pause image's /pause: it sleeps until SIGINT or
// SIGTERM (then exits 0) and reaps children it inherits as PID 1 of a
// shared PID namespace, like the real one.
const pauseSource = `package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
`

// nginxWelcome is the page the nginx stand-ins serve at "/".
const nginxWelcome = `<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the web server is working. (This is a stand-in
for nginx in runclet's critest run.)</p>
</body>
</html>
`

// httpdWelcome is the page the httpd stand-in serves at "/", as Apache's.
const httpdWelcome = "<html><body><h1>It works!</h1></body></html>\n"

// tarEntry is one entry of a layer built here; directory names end in "/".
// Entries are written in the order given, so a hard link (link set) must
// come after its target.
type tarEntry struct {
	name     string
	mode     int64
	uid, gid int
	data     []byte
	link     string // hard link target (archive path)
}

func layer(entries ...tarEntry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: testimage.Epoch,
			Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		switch {
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag, h.Size = tar.TypeDir, 0
		case e.link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.link, 0
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
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// dirs returns directory entries (mode 0755) for p and each of its parents,
// outermost first: "usr/share/" gives "usr/" and "usr/share/".
func dirs(p string) []tarEntry {
	var out []tarEntry
	for i := range p {
		if p[i] == '/' {
			out = append(out, tarEntry{name: p[:i+1], mode: 0o755})
		}
	}
	return out
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

// goBinary compiles a stand-alone Go program (cached across runs) and
// returns its bytes.
func goBinary(name, src string) ([]byte, error) {
	p, err := testimage.GoBinary(name, src)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// nginx stands in for e2e-test-images/nginx:1.14-2 (port 80) and
// k8s-staging-cri-tools/hostnet-nginx (nginx configured for port 12003, run
// in the host network): testimage.WebServerSource installed as
// /usr/sbin/nginx, serving a welcome page on port. Like nginx it writes its
// PID to /var/run/nginx.pid ("HostPID" cats it in the nginx container and
// expects "pidof nginx" in a host-PID busybox to show it) and retitles its
// process "nginx: master process nginx ..." ("ContainerPID" waits for
// "master process" in /proc/1/cmdline of the nginx container; "PodPID"
// expects it not to be PID 1 when the pod shares one PID namespace); its
// process name (comm), which pidof matches, is "nginx".
func nginx(base v1.Image, server []byte, port string) (v1.Image, error) {
	const html = "usr/share/nginx/html/"
	entries := append(dirs("usr/sbin/"), tarEntry{name: "usr/sbin/nginx", mode: 0o755, data: server})
	entries = append(entries, dirs(html)...)
	entries = append(entries,
		tarEntry{name: html + "index.html", mode: 0o644, data: []byte(nginxWelcome)},
		tarEntry{name: "var/", mode: 0o755},
		tarEntry{name: "var/run/", mode: 0o755})
	return derive(base, func(c *v1.Config) {
		c.Cmd = []string{"nginx", "-name", "nginx", "-title", "nginx: master process",
			"-listen", ":" + port, "-root", "/" + strings.TrimSuffix(html, "/"), "-pidfile", "/var/run/nginx.pid"}
		c.ExposedPorts = map[string]struct{}{port + "/tcp": {}}
		c.StopSignal = "SIGQUIT"
	}, entries...)
}

// httpd stands in for e2e-test-images/httpd:2.4.39-4: the same server as
// /usr/local/apache2/bin/httpd on port 80 with Apache's "It works!" page.
// "Multiple Containers ... should support container log" expects "httpd"
// in its log: it prints "httpd: serving ..." to stderr when it starts.
func httpd(base v1.Image, server []byte) (v1.Image, error) {
	const prefix = "usr/local/apache2/"
	entries := append(dirs(prefix+"bin/"), tarEntry{name: prefix + "bin/httpd", mode: 0o755, data: server})
	entries = append(entries,
		tarEntry{name: prefix + "htdocs/", mode: 0o755},
		tarEntry{name: prefix + "htdocs/index.html", mode: 0o644, data: []byte(httpdWelcome)})
	return derive(base, func(c *v1.Config) {
		c.Cmd = []string{"httpd", "-name", "httpd", "-listen", ":80", "-root", "/" + prefix + "htdocs"}
		c.Env = []string{
			"PATH=/" + prefix + "bin:" + strings.TrimPrefix(testimage.DefaultPath, "PATH="),
			"HTTPD_PREFIX=/" + strings.TrimSuffix(prefix, "/"),
		}
		c.WorkingDir = "/" + strings.TrimSuffix(prefix, "/")
		c.ExposedPorts = map[string]struct{}{"80/tcp": {}}
	}, entries...)
}

// pause stands in for registry.k8s.io/pause:3.9 (also pulled as
// k8s.gcr.io/pause:3.9: one push serves both names with one digest, which
// "removing image from one registry" and "Image Identifier Consistency"
// rely on). Like the real one it holds only /pause, run as 65535:65535.
func pause(bin []byte) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: testimage.Epoch},
		Config: v1.Config{
			Entrypoint: []string{"/pause"},
			Env:        []string{testimage.DefaultPath},
			User:       "65535:65535",
			WorkingDir: "/",
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return derive(img, nil, tarEntry{name: "pause", mode: 0o755, data: bin})
}

// pushImages builds the images critest pulls and pushes them to reg. It
// returns the references it could not provide, with why.
func pushImages(reg *testregistry.Registry) (missing []string, err error) {
	base, err := testimage.DynamicBusybox()
	if err != nil {
		return nil, err
	}
	images := map[string]v1.Image{e2e + "busybox:1.29-2": base}
	add := func(ref string, img v1.Image, err error) error {
		if err != nil {
			return fmt.Errorf("building %s: %w", ref, err)
		}
		images[ref] = img
		return nil
	}

	pauseBin, err := goBinary("pause", pauseSource)
	if err != nil {
		return nil, err
	}
	img, err := pause(pauseBin)
	if err := add("pause:3.9", img, err); err != nil {
		return nil, err
	}

	server, err := goBinary("webserver", testimage.WebServerSource)
	if err != nil {
		return nil, err
	}
	img, err = nginx(base, server, "80")
	if err := add(e2e+"nginx:1.14-2", img, err); err != nil {
		return nil, err
	}
	img, err = nginx(base, server, "12003")
	if err := add(critoo+"hostnet-nginx-"+runtime.GOARCH+":latest", img, err); err != nil {
		return nil, err
	}
	img, err = httpd(base, server)
	if err := add(e2e+"httpd:2.4.39-4", img, err); err != nil {
		return nil, err
	}

	nnp, err := goBinary("nnp", nnpSource)
	if err != nil {
		return nil, err
	}
	img, err = derive(base, func(c *v1.Config) { c.Entrypoint = []string{"/usr/local/bin/nnp"}; c.Cmd = nil },
		append(dirs("usr/local/bin/"), tarEntry{name: "usr/local/bin/nnp", mode: 0o4755, data: nnp})...)
	if err := add(e2e+"nonewprivs:1.3", img, err); err != nil {
		return nil, err
	}

	for name, user := range userImages {
		img, err := derive(base, func(c *v1.Config) { c.User = user })
		if err := add(critoo+name+":latest", img, err); err != nil {
			return nil, err
		}
	}
	img, err = derive(base, func(c *v1.Config) { c.User = "1000" },
		tarEntry{name: "etc/", mode: 0o755},
		tarEntry{name: "etc/group", mode: 0o644, data: []byte(predefinedGroup)},
		tarEntry{name: "etc/passwd", mode: 0o644, data: []byte(predefinedPasswd)},
		tarEntry{name: "home/", mode: 0o755},
		tarEntry{name: "home/default-user/", mode: 0o755, uid: 1000, gid: 1000})
	if err := add(critoo+"test-image-predefined-group:latest", img, err); err != nil {
		return nil, err
	}

	for ref, file := range testImages {
		img, err := derive(base, nil, tarEntry{name: file, mode: 0o644})
		if err := add(critoo+ref, img, err); err != nil {
			return nil, err
		}
	}

	for ref, img := range images {
		if _, err := reg.Push(ref, img); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", ref, err)
		}
	}
	missing = append(missing,
		"gcr.io/"+critoo+"test-image-digest@sha256:9700f9a2… (a fixed upstream digest; cannot be rebuilt)")
	return missing, nil
}
