package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod with hostUsers: false: its apps run as the mapped ids, see only
// their mapping, can write their id-mapped rootfs as root, share the
// pod's pid namespace, and own their network namespace.
func TestCRIUserNamespacePod(t *testing.T) {
	ci := newCRIInstance(t)
	// t.TempDir's directories are 0700; the pod's root (not host root)
	// must be able to reach its bundle, as under a real /var/lib.
	for d := filepath.Dir(ci.root); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	ci.startDaemon()
	ctx := ctxT(t)
	img := ci.pushBusybox()
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
		t.Fatal(err)
	}
	const hostID, size = 300000, 65536
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: hostID, Length: size}}
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
	sb := ci.sandboxConfig("userns")
	sb.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
		Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: userns,
	}}
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	pst, err := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if u := pst.Status.GetLinux().GetNamespaces().GetOptions().GetUsernsOptions(); u.GetMode() != runtimeapi.NamespaceMode_POD || len(u.GetUids()) != 1 || u.Uids[0].HostId != hostID {
		t.Fatalf("sandbox status user namespace = %v", u)
	}

	cc := containerConfig("app", img, nil, "sh", "-c",
		"cat /proc/self/uid_map; id -u; echo hi > /written && stat -c %u /written; ip link set lo mtu 1400 && echo netadmin; exec sleep 600")
	cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: sb.Linux.SecurityContext.NamespaceOptions,
		Capabilities:     &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}},
	}}
	cr, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sb})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	ci.waitLog(sb.LogDirectory+"/app/0.log",
		fmt.Sprintf("stdout F %10d %10d %10d", 0, hostID, size), "stdout F 0", "stdout F 0", "stdout F netadmin")

	// From the host the app is the mapped uid, not root.
	pid := appPid(t, ci, podID, cr.ContainerId)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", hostID, hostID, hostID, hostID)) {
		t.Fatalf("app's host credentials:\n%s", status)
	}
	// A second app shares the pod's pid namespace and user namespace.
	cc2 := containerConfig("peer", img, nil, "sh", "-c", "ps -o args | grep -q '^sleep 600'")
	cc2.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: sb.Linux.SecurityContext.NamespaceOptions}}
	cr2, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc2, SandboxConfig: sb})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr2.ContainerId}); err != nil {
		t.Fatal(err)
	}
	if st := ci.waitState(ctx, cr2.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
		t.Fatalf("peer app does not see the first app's sleep: exit %d", st.ExitCode)
	}

	// A container cannot leave the pod's user namespace.
	bad := containerConfig("host-users", img, nil, "true")
	bad.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
		Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE},
	}}}
	_, err = ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: bad, SandboxConfig: sb})
	wantCode(t, err, codes.InvalidArgument, "container asking for the host user namespace in a userns pod")

	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Fatalf("app pid %d still alive after the pod was removed", pid)
	}
}
