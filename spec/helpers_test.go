package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

// TestMain pins the seccomp architecture so specs (and goldens) are the same
// on every machine.
func TestMain(m *testing.M) {
	targetArch = "amd64"
	os.Exit(m.Run())
}

// imageFiles serves files from a map, like an unpacked image would.
func imageFiles(files map[string]string) ImageFiles {
	return func(path string) ([]byte, error) {
		data, ok := files[path]
		if !ok {
			return nil, fmt.Errorf("open %s: %w", path, fs.ErrNotExist)
		}
		return []byte(data), nil
	}
}

const busyboxPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`

const busyboxGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`

func busyboxFiles() ImageFiles {
	return imageFiles(map[string]string{"/etc/passwd": busyboxPasswd, "/etc/group": busyboxGroup})
}

func busyboxImage() ocispec.ImageConfig {
	return ocispec.ImageConfig{
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cmd: []string{"sh"},
	}
}

const podID = "4f9d2c1e7a3b"

// testPod is a flavor-runc pod with pinned namespaces and per-pod files, the
// way stage0 describes one.
func testPod() Pod {
	ns := "/run/runclet/pods/" + podID + "/ns/"
	dir := "/var/lib/runclet/pods/" + podID + "/"
	return Pod{
		ID:             podID,
		Name:           "web",
		Hostname:       "web-0",
		NetNSPath:      ns + "net",
		IPCNSPath:      ns + "ipc",
		UTSNSPath:      ns + "uts",
		PIDNSPath:      ns + "pid",
		CgroupParent:   "/runclet/" + podID,
		ResolvConfPath: dir + "resolv.conf",
		HostsPath:      dir + "hosts",
		HostnamePath:   dir + "hostname",
		ShmPath:        "/run/runclet/pods/" + podID + "/shm",
	}
}

// mustGenerate generates a spec or fails the test.
func mustGenerate(t *testing.T, img ocispec.ImageConfig, files ImageFiles, app App, pod Pod, flavor Flavor) *specs.Spec {
	t.Helper()
	s, err := Generate(img, files, app, pod, flavor)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

// wantInvalid fails unless err is an errdefs.InvalidArgument.
func wantInvalid(t *testing.T, err error) {
	t.Helper()
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("error = %v, want an invalid argument error", err)
	}
}

func ptr[T any](v T) *T { return &v }

// errorFiles fails every read with a non-NotExist error.
func errorFiles(path string) ([]byte, error) {
	return nil, errors.New("disk on fire")
}
