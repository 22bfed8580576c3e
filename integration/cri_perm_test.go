package integration

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/internal/fsutil"
)

// suidProbeSource says who it runs as and whether it can read a root-only
// file: run setuid-root by a host user, it is CVE-2021-41103.
const suidProbeSource = `package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("PROBE euid=%d\n", os.Geteuid())
	if _, err := os.ReadFile("/etc/shadow"); err == nil {
		fmt.Println("PROBE read /etc/shadow")
	}
}
`

// suidImage is busybox plus /usr/local/bin/suidprobe, setuid root in the
// image itself.
func suidImage(t *testing.T) v1.Image {
	t.Helper()
	bin, err := testimage.GoBinary("suidprobe", suidProbeSource)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "usr/local/bin/suidprobe", Typeflag: tar.TypeReg, Mode: 0o4755, Size: int64(len(data))})
	tw.Write(data)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(testimage.MustBusybox(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// asNobody runs argv as uid/gid 65534 with no supplementary groups.
func asNobody(argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A host user can neither list nor run anything under the data and run
// roots of running pods, with or without a user namespace: not a
// setuid-root copy a container left in its /tmp (through fs/upper or the
// rootfs mount point), not the image's own setuid file (through the
// rootfs or the unpacked layer), not a directory listing.
func TestCRIHostUsersCannotReachPodFiles(t *testing.T) {
	ci := newCRIInstance(t)
	// Only runclet's own modes may stop the attacker: make the test's
	// temporary parents as open as /var/lib and /run are.
	for _, root := range []string{ci.root, ci.runRoot} {
		for d := filepath.Dir(root); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Planted before the daemon starts: an older runclet's open modes are
	// tightened on start.
	for _, d := range []string{ci.root, filepath.Join(ci.root, "pods"), ci.runRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o711)
	}
	ci.startDaemon()
	ctx := ctxT(t)
	if _, err := ci.reg.Push("test/suid:latest", suidImage(t)); err != nil {
		t.Fatal(err)
	}
	img := ci.reg.Host() + "/test/suid:latest"
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
		t.Fatal(err)
	}

	const hostID, size = 310000, 65536
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: hostID, Length: size}}
	type started struct{ pod, app string }
	var pods []started
	for _, userns := range []bool{false, true} {
		name := "perm"
		sb := ci.sandboxConfig(name)
		var nsOpts *runtimeapi.NamespaceOption
		if userns {
			name = "perm-userns"
			sb = ci.sandboxConfig(name)
			nsOpts = &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}}
			sb.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: nsOpts}
		}
		run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
		if err != nil {
			t.Fatal(err)
		}
		cc := containerConfig("app", img, nil, "sh", "-c",
			"cp /usr/local/bin/suidprobe /tmp/p && chmod 4755 /tmp/p && /tmp/p && echo ready && exec sleep 600")
		if userns {
			cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOpts}}
		}
		cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cc, SandboxConfig: sb})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		// Inside, the app's setuid programs still work (no nosuid on its rootfs).
		ci.waitLog(sb.LogDirectory+"/app/0.log", "stdout F PROBE euid=0", "stdout F ready")
		pods = append(pods, started{run.PodSandboxId, cr.ContainerId})
	}

	// Every setuid file a host user could try.
	var targets []string
	for _, p := range pods {
		app := filepath.Join(ci.root, "pods", p.pod, "apps", p.app)
		targets = append(targets,
			filepath.Join(app, "fs", "upper", "tmp", "p"),
			filepath.Join(app, "bundle", "rootfs", "tmp", "p"),
			filepath.Join(app, "bundle", "rootfs", "usr", "local", "bin", "suidprobe"))
	}
	layers, _ := filepath.Glob(filepath.Join(ci.root, "images", "layers", "sha256", "*", "diff", "usr", "local", "bin", "suidprobe"))
	if len(layers) == 0 {
		t.Fatal("no unpacked layer holds suidprobe: the store layout changed, fix this test")
	}
	targets = append(targets, layers...)
	for _, tg := range targets {
		if fi, err := os.Stat(tg); err != nil || fi.Mode()&fs.ModeSetuid == 0 {
			t.Fatalf("%s: want a setuid file there (as root): %v %v", tg, fi, err)
		}
		out, err := asNobody(tg)
		if err == nil || strings.Contains(out, "PROBE") {
			t.Errorf("host user nobody ran %s: %q %v", tg, out, err)
		}
	}

	// No directory under either root can be listed, and the only
	// directories a host user may even stat are the roots themselves.
	var dirs []string
	for _, root := range []string{ci.root, ci.runRoot} {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if rel, _ := filepath.Rel(root, path); strings.Count(rel, "/") >= 5 {
				return fs.SkipDir // deep inside rootfs trees: their parents are what count
			}
			dirs = append(dirs, path)
			return nil
		})
	}
	script := `for d; do ls "$d" >/dev/null 2>&1 && echo "LISTED $d"; [ "$d" = ` + ci.root + ` ] || [ "$d" = ` + ci.runRoot + ` ] || ! stat "$d" >/dev/null 2>&1 || echo "REACHED $d"; done; true`
	out, err := asNobody(append([]string{"/bin/sh", "-c", script, "sh"}, dirs...)...)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("host user nobody got into %d dirs of the roots:\n%s", strings.Count(out, "\n"), out)
	}
	if len(dirs) < 20 {
		t.Fatalf("walked only %d dirs: %v", len(dirs), dirs)
	}
	for _, p := range pods {
		if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.pod}); err != nil {
			t.Fatal(err)
		}
		if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.pod}); err != nil {
			t.Fatal(err)
		}
	}
	// The userns pod's root may no longer search the data root.
	for _, d := range []string{ci.root, filepath.Join(ci.root, "pods")} {
		if g, err := fsutil.ACLGroups(d); err != nil || len(g) != 0 {
			t.Errorf("%s: ACL groups left after the pods went: %v %v", d, g, err)
		}
	}
}
