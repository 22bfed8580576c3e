// Package testimage builds small, deterministic OCI test images without
// touching the network: the base is the host's statically linked busybox
// (Debian package busybox-static), and extra programs are tiny Go programs
// compiled during the test run.
//
// Every image is built the same way each time (fixed mtimes and Created
// times, sorted tar entries, our own gzip), so building an image twice, or in
// two processes on the same host, gives the same manifest digest. Images use
// OCI media types.
//
// Functions return errors rather than taking a testing.TB so that the mkimage
// command can share them; tests can wrap calls in Must or the Must* helpers.
package testimage

import (
	"archive/tar"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is the host busybox that Busybox copies into its image. It
// must be statically linked (Debian: apt-get install busybox-static), since
// the image carries no libc.
var BusyboxPath = "/bin/busybox"

// DefaultPath is the PATH in the Env of every test image, the same value
// Docker uses for images without one.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LabelTest is the config label naming which test image this is.
const LabelTest = "org.runclet.test"

// Users and groups in the Busybox /etc/passwd and /etc/group, for tests of
// USER resolution.
const (
	DefaultUser    = "default-user" // uid DefaultUserUID, primary gid DefaultUserGID
	DefaultUserUID = 1000
	DefaultUserGID = 50000 // group "group-50000"
	NobodyUID      = 65534
	NogroupGID     = 65534
)

const passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
default-user:x:1000:50000:default-user:/home/default-user:/bin/sh
`

const group = `root:x:0:
daemon:x:1:
nogroup:x:65534:
group-50000:x:50000:
`

// baseImage returns an image with an OCI manifest, an OCI config holding
// cfg for linux/arch, and no layers yet.
func baseImage(arch string, cfg v1.Config) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: arch,
		OS:           "linux",
		Created:      v1.Time{Time: Epoch},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

// appendLayer adds layer on top of base with a history entry saying what it
// is, the way a Dockerfile step would.
func appendLayer(base v1.Image, createdBy string, layer v1.Layer) (v1.Image, error) {
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: Epoch},
			CreatedBy: createdBy,
			Comment:   "runclet testimage",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("appending layer %q: %w", createdBy, err)
	}
	return img, nil
}

// appendFiles builds a layer from files and appends it.
func appendFiles(base v1.Image, createdBy string, files ...file) (v1.Image, error) {
	l, err := layerFromFiles(files)
	if err != nil {
		return nil, fmt.Errorf("building layer %q: %w", createdBy, err)
	}
	return appendLayer(base, createdBy, l)
}

// editConfig returns base with its runtime config changed by edit.
func editConfig(base v1.Image, edit func(*v1.Config)) (v1.Image, error) {
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cf = cf.DeepCopy()
	edit(&cf.Config)
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

// busyboxLayer returns the (cached) busybox root filesystem layer.
func busyboxLayer() (v1.Layer, error) {
	return cached("busybox:"+BusyboxPath, buildBusyboxLayer)
}

func buildBusyboxLayer() (v1.Layer, error) {
	if err := checkStatic(BusyboxPath); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("reading busybox (apt-get install busybox-static): %w", err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets with %s --list: %w", BusyboxPath, err)
	}

	files := []file{
		dir("bin", 0o755),
		dir("dev", 0o755),
		dir("etc", 0o755),
		dir("home", 0o755),
		{name: "home/default-user", typ: tar.TypeDir, mode: 0o755, uid: DefaultUserUID, gid: DefaultUserGID},
		dir("proc", 0o555),
		dir("root", 0o700),
		dir("sys", 0o555),
		dir("tmp", 0o1777),
		dir("var", 0o755),
		reg("etc/passwd", 0o644, passwd),
		reg("etc/group", 0o644, group),
		{name: "bin/busybox", typ: tar.TypeReg, mode: 0o755, data: bin},
	}
	seen := map[string]bool{"busybox": true}
	// sh is listed by every busybox build we know of, but the image is
	// useless without it, so make sure it is there.
	for _, applet := range append(strings.Fields(string(out)), "sh") {
		if seen[applet] {
			continue
		}
		if applet == "." || applet == ".." || strings.Contains(applet, "/") {
			return nil, fmt.Errorf("%s --list printed an unexpected applet name %q", BusyboxPath, applet)
		}
		seen[applet] = true
		// Relative target: the link must resolve inside the container's
		// rootfs, wherever that is mounted on the host.
		files = append(files, symlink("bin/"+applet, "busybox"))
	}
	return layerFromFiles(files)
}

// checkStatic fails if the ELF file at p asks for a dynamic loader: such a
// binary would not run in an image without libc (Debian's "busybox" package
// is dynamic, "busybox-static" is not).
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("opening busybox (apt-get install busybox-static): %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; install busybox-static", p)
		}
	}
	return nil
}

// busybox returns the busybox image for arch (only the config says which
// architecture; the binary is always the host's).
func busybox(arch string) (v1.Image, error) {
	l, err := busyboxLayer()
	if err != nil {
		return nil, err
	}
	img, err := baseImage(arch, v1.Config{
		Cmd:    []string{"sh"},
		Env:    []string{DefaultPath},
		Labels: map[string]string{LabelTest: "busybox"},
	})
	if err != nil {
		return nil, err
	}
	return appendLayer(img, "busybox-static rootfs", l)
}

// Busybox returns a one-layer linux/GOARCH image: /bin/busybox (0755) with a
// /bin/<applet> -> busybox symlink for every applet (so /bin/sh), an
// /etc/passwd with root, daemon, nobody (65534) and default-user
// (1000:50000), an /etc/group with root, daemon, nogroup (65534) and
// group-50000, /tmp (1777), /root (0700), /home, /home/default-user (owned by
// 1000:50000), /var, /proc, /sys and /dev. Config: Cmd ["sh"], Env PATH, label
// org.runclet.test=busybox.
func Busybox() (v1.Image, error) {
	return busybox(runtime.GOARCH)
}

// WithUser returns base with config USER set to user ("1000",
// "default-user:group-50000", ...).
func WithUser(base v1.Image, user string) (v1.Image, error) {
	return editConfig(base, func(c *v1.Config) { c.User = user })
}

// MultiLayer returns a three-layer image: Busybox, then a layer with
//
//	/data/a.txt               "file a\n"
//	/data/dir/b.txt           "file b\n"
//	/data/hardlink-to-a.txt   hardlink to /data/a.txt
//	/data/link-to-b           symlink -> dir/b.txt
//	/data/owned.txt           "owned\n", 0600, owned by 1000:50000
//
// and a layer adding /data/c.txt "file c\n". The config sets most fields an
// OCI spec generator has to translate: Entrypoint ["/bin/sh","-c"], Cmd
// ["cat a.txt dir/b.txt c.txt"], WorkingDir /data, Env PATH and
// RUNCLET_TEST=multilayer, ExposedPorts 8080/tcp and 5353/udp, Volumes
// /data/vol, StopSignal SIGQUIT, label org.runclet.test=multilayer.
func MultiLayer() (v1.Image, error) {
	img, err := Busybox()
	if err != nil {
		return nil, err
	}
	img, err = appendFiles(img, "data files, a hardlink and a symlink",
		dir("data", 0o755),
		reg("data/a.txt", 0o644, "file a\n"),
		dir("data/dir", 0o755),
		reg("data/dir/b.txt", 0o644, "file b\n"),
		hardlink("data/hardlink-to-a.txt", "data/a.txt"),
		symlink("data/link-to-b", "dir/b.txt"),
		file{name: "data/owned.txt", typ: tar.TypeReg, mode: 0o600, uid: DefaultUserUID, gid: DefaultUserGID, data: []byte("owned\n")},
	)
	if err != nil {
		return nil, err
	}
	img, err = appendFiles(img, "data/c.txt",
		dir("data", 0o755),
		reg("data/c.txt", 0o644, "file c\n"),
	)
	if err != nil {
		return nil, err
	}
	return editConfig(img, func(c *v1.Config) {
		c.Entrypoint = []string{"/bin/sh", "-c"}
		c.Cmd = []string{"cat a.txt dir/b.txt c.txt"}
		c.WorkingDir = "/data"
		c.Env = []string{DefaultPath, "RUNCLET_TEST=multilayer"}
		c.ExposedPorts = map[string]struct{}{"8080/tcp": {}, "5353/udp": {}}
		c.Volumes = map[string]struct{}{"/data/vol": {}}
		c.StopSignal = "SIGQUIT"
		c.Labels = map[string]string{LabelTest: "multilayer"}
	})
}

// Whiteouts returns an image whose top layer deletes files of the layer
// below: Busybox, then a layer creating /w/keep, /w/gone and /w/opaque/old,
// then a layer with the whiteout /w/.wh.gone, the opaque marker
// /w/opaque/.wh..wh..opq and a new file /w/opaque/new. Unpacked correctly the
// rootfs has /w/keep and /w/opaque/new, and neither /w/gone nor
// /w/opaque/old nor any .wh. file. Label org.runclet.test=whiteouts.
func Whiteouts() (v1.Image, error) {
	img, err := Busybox()
	if err != nil {
		return nil, err
	}
	img, err = appendFiles(img, "files to delete later",
		dir("w", 0o755),
		reg("w/keep", 0o644, "keep\n"),
		reg("w/gone", 0o644, "gone\n"),
		dir("w/opaque", 0o755),
		reg("w/opaque/old", 0o644, "old\n"),
	)
	if err != nil {
		return nil, err
	}
	img, err = appendFiles(img, "whiteout and opaque directory",
		dir("w", 0o755),
		reg("w/.wh.gone", 0o644, ""),
		dir("w/opaque", 0o755),
		reg("w/opaque/.wh..wh..opq", 0o644, ""),
		reg("w/opaque/new", 0o644, "new\n"),
	)
	if err != nil {
		return nil, err
	}
	return editConfig(img, func(c *v1.Config) {
		c.Labels = map[string]string{LabelTest: "whiteouts"}
	})
}

// Tools returns Busybox plus /usr/local/bin/sleepy (see SleepySource), with
// Cmd ["/usr/local/bin/sleepy"] and label org.runclet.test=tools.
func Tools() (v1.Image, error) {
	img, err := Busybox()
	if err != nil {
		return nil, err
	}
	l, err := GoProgram("sleepy", SleepySource)
	if err != nil {
		return nil, err
	}
	img, err = appendLayer(img, "go build sleepy", l)
	if err != nil {
		return nil, err
	}
	return editConfig(img, func(c *v1.Config) {
		c.Cmd = []string{"/usr/local/bin/sleepy"}
		c.Labels = map[string]string{LabelTest: "tools"}
	})
}

// ForeignArch is the architecture of Index's second manifest: one that is
// not runtime.GOARCH, so platform selection can be tested.
func ForeignArch() string {
	if runtime.GOARCH == "amd64" {
		return "arm64"
	}
	return "amd64"
}

// Index returns an OCI image index with two manifests, the host platform
// first:
//   - linux/GOARCH: Busybox plus a layer with /platform = "linux/GOARCH";
//   - linux/ForeignArch(): a one-layer image holding only /platform =
//     "linux/<foreign arch>" (nothing runnable), config Architecture set
//     to match.
//
// A runtime that pulls it should get the first and be able to run
// "cat /platform".
func Index() (v1.ImageIndex, error) {
	host, err := Busybox()
	if err != nil {
		return nil, err
	}
	host, err = appendFiles(host, "platform marker", reg("platform", 0o644, "linux/"+runtime.GOARCH))
	if err != nil {
		return nil, err
	}
	host, err = editConfig(host, func(c *v1.Config) {
		c.Labels = map[string]string{LabelTest: "index"}
	})
	if err != nil {
		return nil, err
	}

	arch := ForeignArch()
	foreign, err := baseImage(arch, v1.Config{
		Cmd:    []string{"/bin/sh"},
		Env:    []string{DefaultPath},
		Labels: map[string]string{LabelTest: "index"},
	})
	if err != nil {
		return nil, err
	}
	foreign, err = appendFiles(foreign, "platform marker", reg("platform", 0o644, "linux/"+arch))
	if err != nil {
		return nil, err
	}

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	return mutate.AppendManifests(idx,
		mutate.IndexAddendum{Add: host, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		}},
		mutate.IndexAddendum{Add: foreign, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: arch},
		}},
	), nil
}
