package integration

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// An image mounted as a volume (Kubernetes image volumes): its files are
// there, read-only, a sub path mounts one directory, status reports the
// image id, and a bad request leaves nothing mounted (checked at cleanup).
func TestCRIImageVolume(t *testing.T) {
	ci := newCRIInstance(t)
	ci.startDaemon()
	ctx := ctxT(t)
	img := ci.pushBusybox()
	pulled, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	sb := ci.sandboxConfig("imagevol")
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	vol := func(path, sub string, ro bool) *runtimeapi.Mount {
		return &runtimeapi.Mount{ContainerPath: path, Readonly: ro, ImageSubPath: sub, Image: &runtimeapi.ImageSpec{Image: img}}
	}
	cc := containerConfig("reader", img, nil, "sh", "-c",
		"test -x /iv/bin/sh && ls /sub/sh && ! touch /iv/x 2>/dev/null && /iv/bin/echo exec-ok")
	cc.Mounts = []*runtimeapi.Mount{vol("/iv", "", true), vol("/sub", "bin", true)}
	cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sb})
	if err != nil {
		t.Fatal(err)
	}
	st := ci.containerStatus(ctx, cr.ContainerId)
	var reported []string
	for _, m := range st.Mounts {
		if m.Image != nil {
			reported = append(reported, m.ContainerPath+"="+m.Image.ImageRef+":"+m.ImageSubPath)
		}
	}
	if want := "/iv=" + pulled.ImageRef + ": /sub=" + pulled.ImageRef + ":bin"; strings.Join(reported, " ") != want {
		t.Fatalf("status image mounts = %q, want %q", reported, want)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	ci.waitLog(sb.LogDirectory+"/reader/0.log", "stdout F /sub/sh", "stdout F exec-ok")
	if st := ci.waitState(ctx, cr.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
		t.Fatalf("reader exited %d", st.ExitCode)
	}

	for name, m := range map[string]*runtimeapi.Mount{
		"writable":        vol("/iv", "", false),
		"missing subpath": vol("/iv", "no/such/dir", true),
		"escaping":        vol("/iv", "../..", true),
	} {
		bad := containerConfig("bad-"+strings.ReplaceAll(name, " ", "-"), img, nil, "true")
		bad.Mounts = []*runtimeapi.Mount{m}
		_, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: bad, SandboxConfig: sb})
		wantCode(t, err, codes.InvalidArgument, "image volume, "+name)
	}
	if _, err := ci.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	ci.checkNoMounts()
}
