package cri

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/config"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("want %s, got %v", code, err)
	}
}

func sandboxConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ns1", Uid: "uid-" + name, Attempt: 1},
		Hostname:     name,
		LogDirectory: filepath.Join(testLogRoot, "ns1_"+name),
		Labels:       map[string]string{"app": name},
		Annotations:  map[string]string{"a": "b"},
	}
}

func (ts *testServer) runPod(t *testing.T, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	r, err := ts.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return r.PodSandboxId
}

func (ts *testServer) createCtr(t *testing.T, podID string, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	r, err := ts.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return r.ContainerId
}

func ctrConfig(name, img string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: img},
		LogPath:  name + "/0.log",
		Labels:   map[string]string{"c": name},
	}
}

func TestVersionStatusRuntimeConfig(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	ctx := context.Background()
	v, err := ts.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "runclet" || v.RuntimeVersion != "1.2.3" || v.RuntimeApiVersion != "v1" {
		t.Fatalf("%v %v", v, err)
	}
	st, err := ts.rt.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Status.Conditions; len(c) != 2 || c[0].Type != "RuntimeReady" || !c[0].Status || c[1].Type != "NetworkReady" || !c[1].Status {
		t.Fatalf("conditions %v", c)
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
		if h.Features.RecursiveReadOnlyMounts != f.Features().RecursiveReadOnlyMounts || h.Features.UserNamespaces != f.Features().UserNamespaces {
			t.Fatalf("features of %q: %v", h.Name, h.Features)
		}
	}
	if fmt.Sprint(names) != "[ runc]" || !st.Features.SupplementalGroupsPolicy || st.Info["streamURL"] == "" {
		t.Fatalf("handlers %q, features %v, info %v", names, st.Features, st.Info)
	}

	// A network that is not there makes the network not ready.
	broken, err := network.New(network.Config{ConfDir: t.TempDir(), Name: "nosuchnet", StateDir: t.TempDir(), CacheDir: t.TempDir(), IPAMDataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	netErr := broken.Ready()
	if netErr == nil {
		t.Fatal("a network that is not there is ready")
	}
	f.Network = broken
	st, _ = ts.rt.Status(ctx, &runtimeapi.StatusRequest{})
	if c := st.Status.Conditions[1]; c.Status || c.Reason != "NetworkPluginNotReady" || c.Message != netErr.Error() {
		t.Fatalf("network condition %v", c)
	}
	if st.Info != nil {
		t.Fatal("info without verbose")
	}
	rc, err := ts.rt.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
	if err != nil || rc.Linux.CgroupDriver != runtimeapi.CgroupDriver_SYSTEMD {
		t.Fatalf("%v %v", rc, err)
	}
	if _, err := ts.rt.UpdateRuntimeConfig(ctx, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{
		NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.244.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
}

func TestRunPodSandboxMapping(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	cfg := sandboxConfig("web")
	cfg.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"ns1.svc.cluster.local"}, Options: []string{"ndots:5"}}
	cfg.PortMappings = []*runtimeapi.PortMapping{
		{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 5353, HostIp: "127.0.0.1"},
		{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80}, // not published
	}
	cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{
		CgroupParent: "/kubepods/besteffort/poduid-web",
		Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_NODE,
		}},
	}
	ts.runPod(t, cfg)
	p := f.lastPod
	if p.Name != "web" || p.Namespace != "ns1" || p.UID != "uid-web" || p.Attempt != 1 || p.Hostname != "web" || p.Flavor != "runc" ||
		p.Labels["app"] != "web" || p.Annotations["a"] != "b" || p.LogDirectory != filepath.Join(testLogRoot, "ns1_web") {
		t.Fatalf("identity: %+v", p)
	}
	if p.DNS == nil || p.DNS.Servers[0] != "10.96.0.10" || p.DNS.Searches[0] != "ns1.svc.cluster.local" || p.DNS.Options[0] != "ndots:5" {
		t.Fatalf("dns: %+v", p.DNS)
	}
	if len(p.Ports) != 1 || p.Ports[0] != (network.PortMapping{Protocol: "udp", ContainerPort: 53, HostPort: 5353, HostIP: "127.0.0.1"}) {
		t.Fatalf("ports: %+v", p.Ports)
	}
	if p.CgroupParent != "/kubepods/besteffort/poduid-web" || p.Sysctls["net.ipv4.ip_unprivileged_port_start"] != "0" ||
		!p.HostNetwork || p.HostPID || !p.HostIPC {
		t.Fatalf("linux: %+v", p)
	}

	ctx := context.Background()
	for handler, want := range map[string]string{"": "runc", "runc": "runc"} {
		if _, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig("h" + want + handler), RuntimeHandler: handler}); err != nil {
			t.Fatal(err)
		}
		if f.lastPod.Flavor != want {
			t.Fatalf("handler %q: flavor %q", handler, f.lastPod.Flavor)
		}
	}
	n := f.called("CreatePod")
	_, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig("k"), RuntimeHandler: "kata"})
	wantCode(t, err, codes.InvalidArgument)
	if f.called("CreatePod") != n {
		t.Fatal("an invalid request reached the runtime")
	}
}

func TestRunPodSandboxRefusals(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	ctx := context.Background()
	ns := func(o *runtimeapi.NamespaceOption) *runtimeapi.PodSandboxConfig {
		c := sandboxConfig("x")
		c.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: o}}
		return c
	}
	for name, c := range map[string]struct {
		cfg  *runtimeapi.PodSandboxConfig
		code codes.Code
	}{
		"no config":       {nil, codes.InvalidArgument},
		"no metadata":     {&runtimeapi.PodSandboxConfig{}, codes.InvalidArgument},
		"no uid":          {&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "a", Namespace: "b"}}, codes.InvalidArgument},
		"bad name":        {&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "a/b", Namespace: "b", Uid: "u"}}, codes.InvalidArgument},
		"relative logdir": {func() *runtimeapi.PodSandboxConfig { c := sandboxConfig("x"); c.LogDirectory = "logs"; return c }(), codes.InvalidArgument},
		"bad port": {func() *runtimeapi.PodSandboxConfig {
			c := sandboxConfig("x")
			c.PortMappings = []*runtimeapi.PortMapping{{HostPort: 70000, ContainerPort: 1}}
			return c
		}(), codes.InvalidArgument},
		"bad dns": {func() *runtimeapi.PodSandboxConfig {
			c := sandboxConfig("x")
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"dns.example"}}
			return c
		}(), codes.InvalidArgument},
		"user namespace":        {ns(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER, UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}}), codes.InvalidArgument},
		"userns mode container": {ns(&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}}), codes.InvalidArgument},
		"container net":         {ns(&runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_CONTAINER, Pid: runtimeapi.NamespaceMode_CONTAINER}), codes.InvalidArgument},
	} {
		_, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: c.cfg})
		if status.Code(err) != c.code {
			t.Errorf("%s: want %s, got %v", name, c.code, err)
		}
	}
	if n := f.called("CreatePod"); n != 0 {
		t.Fatalf("refused requests reached the runtime %d times", n)
	}
	_, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: ns(&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}})})
	if !strings.Contains(status.Convert(err).Message(), "uid mapping") {
		t.Fatalf("the message must name what is wrong: %v", err)
	}
	// A shared pid namespace maps onto the pod's.
	if _, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: ns(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD})}); err != nil {
		t.Fatal(err)
	}
	if !f.lastPod.SharePID {
		t.Fatal("pid namespace POD did not ask the runtime for a shared pid namespace")
	}
}

// A client that gives up while its pod is made never leaves it behind:
// the pod is made whole on a detached context, then removed.
func TestRunPodSandboxClientGone(t *testing.T) {
	f := newSpy(t)
	ctx, cancel := context.WithCancel(context.Background())
	f.createPod = func(rctx context.Context) {
		cancel()
		time.Sleep(100 * time.Millisecond) // the client's cancel reaches the server
		if rctx.Err() != nil {
			t.Error("the runtime call got the client's cancellation")
		}
	}
	ts := startServer(t, f)
	_, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig("gone")})
	wantCode(t, err, codes.Canceled)
	deadline := time.Now().Add(5 * time.Second)
	for f.called("RemovePod") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	pods, err := f.ListPods()
	if err != nil {
		t.Fatal(err)
	}
	left := len(pods)
	if f.called("CreatePod") != 1 || f.called("RemovePod") != 1 || left != 0 {
		t.Fatalf("created %d, removed %d, left %d", f.called("CreatePod"), f.called("RemovePod"), left)
	}
	f.mu.Lock()
	f.createPod = nil
	f.mu.Unlock()
	r, _ := ts.rt.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
	if len(r.Items) != 0 {
		t.Fatalf("listed: %v", r.Items)
	}
}

func TestSandboxStatusAndList(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	ctx := context.Background()
	a := ts.runPod(t, sandboxConfig("alpha"))
	bcfg := sandboxConfig("beta")
	bcfg.Labels["tier"] = "db"
	b := ts.runPod(t, bcfg)
	host := sandboxConfig("gamma")
	host.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}}}
	c := ts.runPod(t, host)

	st, err := ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: a, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	s := st.Status
	if s.Id != a || s.State != runtimeapi.PodSandboxState_SANDBOX_READY || s.CreatedAt <= 0 || s.Metadata.Name != "alpha" ||
		s.Metadata.Namespace != "ns1" || s.Metadata.Attempt != 1 || s.Labels["app"] != "alpha" || s.Annotations["a"] != "b" || s.RuntimeHandler != "runc" {
		t.Fatalf("status %v", s)
	}
	// The first address the pod got is its IP, the others are additional.
	rec, _, err := f.PodStatus(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	if rec.Attachment != nil {
		for _, p := range rec.Attachment.IPs {
			ips = append(ips, p.Addr().String())
		}
	}
	got := []string{s.Network.Ip}
	for _, ip := range s.Network.AdditionalIps {
		got = append(got, ip.Ip)
	}
	if len(ips) == 0 || !slices.Equal(got, ips) {
		t.Fatalf("network %v, the pod has %v", s.Network, ips)
	}
	if o := s.Linux.Namespaces.Options; o.Network != runtimeapi.NamespaceMode_POD || o.Pid != runtimeapi.NamespaceMode_CONTAINER || o.Ipc != runtimeapi.NamespaceMode_POD {
		t.Fatalf("namespaces %v", o)
	}
	if !strings.Contains(st.Info["info"], `"namespace":"ns1"`) || st.Timestamp == 0 {
		t.Fatalf("verbose info %v", st.Info)
	}
	st, _ = ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: c})
	if o := st.Status.Linux.Namespaces.Options; o.Network != runtimeapi.NamespaceMode_NODE || o.Pid != runtimeapi.NamespaceMode_NODE || st.Status.Network.Ip != "" {
		t.Fatalf("host pod %v", st.Status)
	}
	_, err = ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "feedfeedfeed"})
	wantCode(t, err, codes.NotFound)
	_, err = ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{})
	wantCode(t, err, codes.InvalidArgument)

	if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: b}); err != nil {
		t.Fatal(err)
	}
	list := func(f *runtimeapi.PodSandboxFilter) string {
		t.Helper()
		r, err := ts.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, p := range r.Items {
			ids = append(ids, p.Id)
		}
		return strings.Join(ids, ",")
	}
	ready := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}
	notReady := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}
	for name, c := range map[string]struct {
		f    *runtimeapi.PodSandboxFilter
		want string
	}{
		"all":       {nil, a + "," + b + "," + c},
		"id":        {&runtimeapi.PodSandboxFilter{Id: b}, b},
		"id prefix": {&runtimeapi.PodSandboxFilter{Id: a[:6]}, a},
		"ready":     {&runtimeapi.PodSandboxFilter{State: ready}, a + "," + c},
		"not ready": {&runtimeapi.PodSandboxFilter{State: notReady}, b},
		"labels":    {&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "beta", "tier": "db"}}, b},
		"no match":  {&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "beta", "tier": "web"}}, ""},
		"and":       {&runtimeapi.PodSandboxFilter{State: ready, LabelSelector: map[string]string{"app": "beta"}}, ""},
	} {
		if got := list(c.f); got != c.want {
			t.Errorf("%s: %s, want %s", name, got, c.want)
		}
	}
	stream, err := ts.rt.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{Filter: &runtimeapi.PodSandboxFilter{State: ready}})
	if err != nil {
		t.Fatal(err)
	}
	var streamed []string
	for {
		r, err := stream.Recv()
		if err != nil {
			break
		}
		for _, p := range r.PodSandboxes {
			streamed = append(streamed, p.Id)
		}
	}
	if strings.Join(streamed, ",") != a+","+c {
		t.Fatalf("streamed %v", streamed)
	}
}

func TestStopRemoveSandboxIdempotent(t *testing.T) {
	ts := startServer(t, newReal(t))
	ctx := context.Background()
	for _, id := range []string{"0123456789abcdef", "nope"} {
		if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("stop unknown: %v", err)
		}
		if _, err := ts.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("remove unknown: %v", err)
		}
	}
	_, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{})
	wantCode(t, err, codes.InvalidArgument)

	id := ts.runPod(t, sandboxConfig("web"))
	ctr := ts.createCtr(t, id, sleeperConfig("app"))
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY || len(st.ContainersStatuses) != 1 ||
		st.ContainersStatuses[0].State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("after stop: %v", st)
	}
	// A stopped pod stays until kubelet removes it.
	if r, _ := ts.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); len(r.Items) != 1 {
		t.Fatalf("a stopped pod must stay listed: %v", r.Items)
	}
	_, err = ts.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: id, Config: ctrConfig("late", testImage)})
	wantCode(t, err, codes.FailedPrecondition)
	for range 2 {
		if _, err := ts.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	wantCode(t, err, codes.NotFound)
	_, err = ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
	wantCode(t, err, codes.NotFound)
	if ts.watch.len() != 0 {
		t.Fatalf("%d app watches left", ts.watch.len())
	}
}

func TestCreateContainerMapping(t *testing.T) {
	f := newSpy(t)
	// The image's STOPSIGNAL is what the status reports.
	importImageWith(t, f.Adapter, testImage, func(c *v1.Config) { c.StopSignal = "SIGQUIT" })
	img, err := f.GetImage(testImage)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, f)
	feat := f.Features()
	// cgroup v1 has no unified files: runc refuses them there.
	var unified map[string]string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		unified = map[string]string{"memory.high": "1000000"}
	}
	// Real host paths: the bind mounts' sources, and a seccomp profile
	// that allows everything (runc reads it at create).
	host := t.TempDir()
	for _, d := range []string{"data", "shared", "slave"} {
		if err := os.Mkdir(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seccompFile := filepath.Join(host, "p.json")
	if err := os.WriteFile(seccompFile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sb := sandboxConfig("web")
	sb.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}}
	podID := ts.runPod(t, sb)
	cfg := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: "app", Attempt: 2},
		Image:       &runtimeapi.ImageSpec{Image: img.ID.String()},
		Command:     []string{"/bin/sleep"}, // a binary the image has: runc checks it at create
		Args:        []string{"--port", "80"},
		WorkingDir:  "/srv",
		Envs:        []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1")}, {Key: "B", Value: []byte("x=y")}},
		Labels:      map[string]string{"l": "1"},
		Annotations: map[string]string{"an": "2"},
		LogPath:     "app/2.log",
		Stdin:       true, StdinOnce: true, Tty: true,
		Mounts: []*runtimeapi.Mount{
			{ContainerPath: "/data", HostPath: filepath.Join(host, "data"), Readonly: true, RecursiveReadOnly: true},
			{ContainerPath: "/shared", HostPath: filepath.Join(host, "shared"), Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			{ContainerPath: "/slave", HostPath: filepath.Join(host, "slave"), Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, SelinuxRelabel: true},
		},
		Devices: []*runtimeapi.Device{{HostPath: "/dev/fuse", ContainerPath: "/dev/fuse", Permissions: "rw"}},
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{
				CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 5000,
				CpusetCpus: "0-1", CpusetMems: "0", HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}},
				Unified: unified,
			},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Capabilities:             &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"MKNOD"}},
				Privileged:               true,
				RunAsUser:                &runtimeapi.Int64Value{Value: 1000},
				RunAsGroup:               &runtimeapi.Int64Value{Value: 2000},
				ReadonlyRootfs:           true,
				SupplementalGroups:       []int64{5, 6},
				SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict,
				NoNewPrivs:               true,
				MaskedPaths:              []string{"/proc/kcore"},
				ReadonlyPaths:            []string{"/proc/sys"},
				Seccomp:                  &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: seccompFile},
			},
		},
	}
	r, err := ts.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: sb})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	a := f.lastApp
	f.mu.Unlock()
	if a.Name != "app" || a.Attempt != 2 || a.Image != img.ID.String() || a.Labels["l"] != "1" || a.Annotations["an"] != "2" ||
		a.LogPath != filepath.Join(testLogRoot, "ns1_web/app/2.log") || !a.Stdin || !a.StdinOnce || !a.Tty {
		t.Fatalf("app: %+v", a)
	}
	s := a.Spec
	if fmt.Sprintf("%v %v %v %v", s.Command, s.Args, s.WorkingDir, s.Env) != "[/bin/sleep] [--port 80] /srv [A=1 B=x=y]" {
		t.Fatalf("process: %v %v %v %v", s.Command, s.Args, s.WorkingDir, s.Env)
	}
	if len(s.Mounts) != 3 ||
		fmt.Sprintf("%+v", s.Mounts[0]) != fmt.Sprintf("%+v", spec.Mount{HostPath: filepath.Join(host, "data"), ContainerPath: "/data", Readonly: true, RecursiveReadOnly: true, Propagation: spec.PropagationPrivate}) ||
		s.Mounts[1].Propagation != spec.PropagationBidirectional || s.Mounts[2].Propagation != spec.PropagationHostToContainer || !s.Mounts[2].SELinuxRelabel {
		t.Fatalf("mounts: %+v", s.Mounts)
	}
	hostDevs, err := f.HostDevices() // privileged: all of the host's
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Devices) != 1 || s.Devices[0].HostPath != "/dev/fuse" || s.Devices[0].Permissions != "rw" || len(s.HostDevices) != len(hostDevs) {
		t.Fatalf("devices: %+v %+v", s.Devices, s.HostDevices)
	}
	res := s.Resources
	// Swap and hugepages follow what the host can limit (Features).
	wantSwap, wantHuge := int64(0), int64(0)
	if feat.SwapLimit {
		wantSwap = 64 << 20
	}
	if feat.Hugetlb {
		wantHuge = 4 << 20
	}
	if res.CPUPeriod != 100000 || res.CPUQuota != 50000 || res.CPUShares != 512 || res.MemoryLimit != 64<<20 || res.MemorySwapLimit != wantSwap ||
		res.CPUsetCPUs != "0-1" || res.CPUsetMems != "0" || int64(res.HugepageLimits["2MB"]) != wantHuge || res.Unified["memory.high"] != unified["memory.high"] ||
		res.OOMScoreAdj == nil || *res.OOMScoreAdj != 1000 {
		t.Fatalf("resources: %+v", res)
	}
	if fmt.Sprint(s.CapAdd, s.CapDrop) != "[NET_ADMIN] [MKNOD]" || !s.Privileged || *s.RunAsUser != 1000 || *s.RunAsGroup != 2000 ||
		!s.ReadonlyRootfs || fmt.Sprint(s.SupplementalGroups) != "[5 6]" || s.SupplementalGroupsPolicy != "Strict" || !s.NoNewPrivs ||
		fmt.Sprint(s.MaskedPaths, s.ReadonlyPaths) != "[/proc/kcore] [/proc/sys]" ||
		s.Seccomp != (spec.SeccompProfile{Kind: spec.SeccompLocalhost, LocalhostPath: seccompFile}) {
		t.Fatalf("security: %+v", s)
	}

	// The status reflects the request, from memory.
	st, err := ts.rt.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: r.ContainerId, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	cs := st.Status
	if cs.State != runtimeapi.ContainerState_CONTAINER_CREATED || cs.Metadata.Name != "app" || cs.Metadata.Attempt != 2 ||
		cs.Image.Image != "example.com/app:1" || cs.Image.UserSpecifiedImage != img.ID.String() || cs.ImageId != img.ID.String() ||
		cs.ImageRef != img.RepoDigests[0] || cs.LogPath != filepath.Join(testLogRoot, "ns1_web/app/2.log") || cs.Labels["l"] != "1" ||
		cs.Annotations["an"] != "2" || cs.StartedAt != 0 || cs.FinishedAt != 0 || cs.StopSignal != runtimeapi.Signal_SIGNAL_SIGQUIT ||
		cs.User.Linux.Uid != 1000 || fmt.Sprint(cs.User.Linux.SupplementalGroups) != "[2000 5 6]" || st.Info["info"] == "" {
		t.Fatalf("status: %v", st)
	}
	if len(cs.Mounts) != 3 || cs.Mounts[0].ContainerPath != "/data" || !cs.Mounts[0].RecursiveReadOnly ||
		cs.Mounts[1].Propagation != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL {
		t.Fatalf("status mounts: %v", cs.Mounts)
	}
}

func TestCreateContainerSecurityDefaults(t *testing.T) {
	f := newSpy(t)
	// AppArmor is what the spy says, not the host's (see spy.appArmor):
	// off for the first server, on for the others.
	noAppArmor, appArmor := false, true
	f.appArmor = &noAppArmor
	ts := startServer(t, f)
	podID := ts.runPod(t, sandboxConfig("web"))
	lastApp := func() pod.AppConfig {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.lastApp
	}
	profile := filepath.Join(t.TempDir(), "p.json") // a real file: runc reads it
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// No security context: unconfined seccomp (the CRI's default), no
	// AppArmor, default masked paths (nil).
	ts.createCtr(t, podID, ctrConfig("plain", "example.com/app:1"))
	if s := lastApp().Spec; s.Seccomp.Kind != spec.SeccompUnconfined || s.ApparmorProfile != "" || s.MaskedPaths != nil || s.Privileged {
		t.Fatalf("defaults: %+v", s)
	}
	for name, c := range map[string]struct {
		sc   *runtimeapi.LinuxContainerSecurityContext
		want spec.SeccompProfile
	}{
		"runtime default":     {&runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{}}, spec.SeccompProfile{Kind: spec.SeccompRuntimeDefault}},
		"unconfined":          {&runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}, spec.SeccompProfile{Kind: spec.SeccompUnconfined}},
		"old runtime/default": {&runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "runtime/default"}, spec.SeccompProfile{Kind: spec.SeccompRuntimeDefault}},
		"old localhost":       {&runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "localhost/" + profile}, spec.SeccompProfile{Kind: spec.SeccompLocalhost, LocalhostPath: profile}},
	} {
		cfg := ctrConfig("s"+fmt.Sprint(len(name)), "example.com/app:1")
		cfg.Metadata.Attempt = uint32(len(name) + 100*int(name[0]))
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: c.sc}
		ts.createCtr(t, podID, cfg)
		if lastApp().Spec.Seccomp != c.want {
			t.Errorf("%s: %+v", name, lastApp().Spec.Seccomp)
		}
	}
	// AppArmor: a named profile needs AppArmor on the host.
	cfg := ctrConfig("aa", "example.com/app:1")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "my-profile"}}}
	_, err := ts.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg})
	wantCode(t, err, codes.FailedPrecondition)
	f.mu.Lock()
	f.appArmor = &appArmor
	f.mu.Unlock()
	loads := 0
	var loadErr error
	ts2 := startServer(t, f, func(o *Options) {
		o.LoadAppArmorDefault = func(context.Context) error { loads++; return loadErr }
	})
	ts2.createCtr(t, podID, cfg)
	if lastApp().Spec.ApparmorProfile != "my-profile" || loads != 0 {
		t.Fatalf("apparmor: %q, default profile loaded %d times", lastApp().Spec.ApparmorProfile, loads)
	}
	// Where AppArmor is enabled, RuntimeDefault and no setting at all get
	// runclet's default profile, loaded once; Unconfined and privileged
	// containers get none.
	for i, c := range []struct {
		sc   *runtimeapi.LinuxContainerSecurityContext
		want string
	}{
		{nil, spec.AppArmorDefaultProfile},
		{&runtimeapi.LinuxContainerSecurityContext{}, spec.AppArmorDefaultProfile},
		{&runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}}, spec.AppArmorDefaultProfile},
		{&runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "runtime/default"}, spec.AppArmorDefaultProfile},
		{&runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}, ""},
		{&runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "unconfined"}, ""},
	} {
		cfg := ctrConfig(fmt.Sprintf("aad%d", i), "example.com/app:1")
		if c.sc != nil {
			cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: c.sc}
		}
		ts2.createCtr(t, podID, cfg)
		if lastApp().Spec.ApparmorProfile != c.want {
			t.Errorf("case %d: apparmor %q, want %q", i, lastApp().Spec.ApparmorProfile, c.want)
		}
	}
	if loads != 1 {
		t.Errorf("default profile loaded %d times, want once", loads)
	}
	// A load that fails is reported, and tried again next time.
	loadErr = errors.New("apparmor_parser: not found")
	ts3 := startServer(t, f, func(o *Options) {
		o.LoadAppArmorDefault = func(context.Context) error { loads++; return loadErr }
	})
	_, err = ts3.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("aafail", "example.com/app:1")})
	wantCode(t, err, codes.FailedPrecondition)
	loadErr = nil
	ts3.createCtr(t, podID, ctrConfig("aafail", "example.com/app:1"))
	if loads != 3 || lastApp().Spec.ApparmorProfile != spec.AppArmorDefaultProfile {
		t.Errorf("after a failed load: %d loads, profile %q", loads, lastApp().Spec.ApparmorProfile)
	}
}

func TestCreateContainerRefusals(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	podID := ts.runPod(t, sandboxConfig("web"))
	sc := func(s *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.ContainerConfig {
		c := ctrConfig("app", "example.com/app:1")
		c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: s}
		return c
	}
	edit := func(fn func(c *runtimeapi.ContainerConfig)) *runtimeapi.ContainerConfig {
		c := ctrConfig("app", "example.com/app:1")
		fn(c)
		return c
	}
	for name, c := range map[string]struct {
		cfg  *runtimeapi.ContainerConfig
		code codes.Code
	}{
		"no config":         {nil, codes.InvalidArgument},
		"no metadata":       {edit(func(c *runtimeapi.ContainerConfig) { c.Metadata = nil }), codes.InvalidArgument},
		"bad name":          {edit(func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "app 1" }), codes.InvalidArgument},
		"no image":          {edit(func(c *runtimeapi.ContainerConfig) { c.Image = nil }), codes.InvalidArgument},
		"bad image":         {edit(func(c *runtimeapi.ContainerConfig) { c.Image.Image = "UPPER/case:&" }), codes.InvalidArgument},
		"missing image":     {edit(func(c *runtimeapi.ContainerConfig) { c.Image.Image = "example.com/none:1" }), codes.NotFound},
		"log path escapes":  {edit(func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../etc/passwd" }), codes.InvalidArgument},
		"absolute log path": {edit(func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/passwd" }), codes.InvalidArgument},
		"relative workdir":  {edit(func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "srv" }), codes.InvalidArgument},
		"empty env name":    {edit(func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{{Key: ""}} }), codes.InvalidArgument},
		"relative mount": {edit(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "data", HostPath: "/x"}}
		}), codes.InvalidArgument},
		"mount over /": {edit(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/", HostPath: "/x"}}
		}), codes.InvalidArgument},
		"rro without readonly": {edit(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", HostPath: "/x", RecursiveReadOnly: true}}
		}), codes.InvalidArgument},
		"writable image mount": {edit(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", Image: &runtimeapi.ImageSpec{Image: "example.com/data:1"}}}
		}), codes.InvalidArgument},
		"image mount without image": {edit(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", Readonly: true, Image: &runtimeapi.ImageSpec{}}}
		}), codes.InvalidArgument},
		"mount options": {edit(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", HostPath: "/x", MountOptions: []string{"noexec"}}}
		}), codes.Unimplemented},
		"bad device perms": {edit(func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/fuse", Permissions: "rwx"}}
		}), codes.InvalidArgument},
		"missing device": {edit(func(c *runtimeapi.ContainerConfig) { c.Devices = []*runtimeapi.Device{{HostPath: "/dev/missing"}} }), codes.NotFound},
		"cdi": {edit(func(c *runtimeapi.ContainerConfig) {
			c.CDIDevices = []*runtimeapi.CDIDevice{{Name: "vendor.com/gpu=0"}}
		}), codes.Unimplemented},
		"group without user":             {sc(&runtimeapi.LinuxContainerSecurityContext{RunAsGroup: &runtimeapi.Int64Value{Value: 1}}), codes.InvalidArgument},
		"user and username":              {sc(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{}, RunAsUsername: "x"}), codes.InvalidArgument},
		"negative user":                  {sc(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: -1}}), codes.InvalidArgument},
		"privileged in unprivileged pod": {sc(&runtimeapi.LinuxContainerSecurityContext{Privileged: true}), codes.InvalidArgument},
		"ambient caps":                   {sc(&runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{AddAmbientCapabilities: []string{"NET_RAW"}}}), codes.Unimplemented},
		"host pid":                       {sc(&runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}}), codes.InvalidArgument},
		"host net":                       {sc(&runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER}}), codes.InvalidArgument},
		"target pid":                     {sc(&runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "x"}}), codes.Unimplemented},
		"relative seccomp":               {sc(&runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "p.json"}}), codes.InvalidArgument},
		"bad old seccomp":                {sc(&runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "whatever"}), codes.InvalidArgument},
		"bad masked path":                {sc(&runtimeapi.LinuxContainerSecurityContext{MaskedPaths: []string{"proc/kcore"}}), codes.InvalidArgument},
		"unknown stop sig":               {edit(func(c *runtimeapi.ContainerConfig) { c.StopSignal = 999 }), codes.InvalidArgument},
	} {
		_, err := ts.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: c.cfg,
			SandboxConfig: sandboxConfig("web")})
		if status.Code(err) != c.code {
			t.Errorf("%s: want %s, got %v", name, c.code, err)
		}
	}
	if n := f.called("AddApp"); n != 1 { // only the missing image gets that far
		t.Errorf("AddApp called %d times", n)
	}
	_, err := ts.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: "feedfeed", Config: ctrConfig("app", "example.com/app:1")})
	wantCode(t, err, codes.NotFound)
	ts.createCtr(t, podID, ctrConfig("app", "example.com/app:1"))
	_, err = ts.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("app", "example.com/app:1")})
	wantCode(t, err, codes.AlreadyExists)
}

func TestContainerLifecycle(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	ctx := context.Background()
	podID := ts.runPod(t, sandboxConfig("web"))
	cc := ctrConfig("app", testImage)
	cc.Command = []string{"sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 2"}
	id := ts.createCtr(t, podID, cc)
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id[:8]}); err != nil {
		t.Fatal(err)
	}
	st, _ := ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.Status.StartedAt == 0 {
		t.Fatalf("running: %v", st.Status)
	}
	_, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition)

	// The app exits by itself (an exec lets it go): inotify on its
	// directory tells the index.
	if _, err := ts.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"touch", "/tmp/go"}, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ = ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exit was not noticed: %v", st.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.Status.ExitCode != 2 || st.Status.Reason != "Error" || st.Status.FinishedAt == 0 {
		t.Fatalf("exited: %v", st.Status)
	}
	for range 2 {
		if _, err := ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := ts.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if f.called("RemoveApp") != 1 {
		t.Fatalf("RemoveApp called %d times", f.called("RemoveApp"))
	}
	_, err = ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	wantCode(t, err, codes.NotFound)
	_, err = ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	wantCode(t, err, codes.NotFound)
	if _, err := ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: "0000aaaa"}); err != nil {
		t.Fatalf("stopping an unknown container must succeed: %v", err)
	}
	_, err = ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: -1})
	wantCode(t, err, codes.InvalidArgument)

	// A running container stopped through the CRI.
	// It is its pid namespace's init, which the kernel spares signals it
	// has no handler for: it handles SIGTERM by exiting as if killed by it.
	two := ctrConfig("two", testImage)
	two.Command = []string{"sh", "-c", "trap 'exit 143' TERM; sleep 3600 & wait"}
	id2 := ts.createCtr(t, podID, two)
	ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id2})
	if _, err := ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id2, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	st, _ = ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id2})
	if st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.Status.ExitCode != 143 {
		t.Fatalf("stopped: %v", st.Status)
	}
}

func TestListContainersFilters(t *testing.T) {
	ts := startServer(t, newReal(t))
	ctx := context.Background()
	p1 := ts.runPod(t, sandboxConfig("one"))
	p2 := ts.runPod(t, sandboxConfig("two"))
	a := ts.createCtr(t, p1, ctrConfig("a", "example.com/app:1"))
	b := ts.createCtr(t, p1, sleeperConfig("b"))
	c := ts.createCtr(t, p2, ctrConfig("c", "example.com/app:1"))
	ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: b})
	list := func(f *runtimeapi.ContainerFilter) string {
		t.Helper()
		r, err := ts.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range r.Containers {
			ids = append(ids, c.Id)
			if c.ImageId == "" || c.Image.Image != "example.com/app:1" || c.Metadata.Name == "" || c.CreatedAt == 0 {
				t.Fatalf("container %v", c)
			}
		}
		return strings.Join(ids, ",")
	}
	running := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
	created := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_CREATED}
	for name, tc := range map[string]struct {
		f    *runtimeapi.ContainerFilter
		want string
	}{
		"all":           {nil, a + "," + b + "," + c},
		"pod":           {&runtimeapi.ContainerFilter{PodSandboxId: p1}, a + "," + b},
		"pod prefix":    {&runtimeapi.ContainerFilter{PodSandboxId: p2[:5]}, c},
		"id":            {&runtimeapi.ContainerFilter{Id: c}, c},
		"running":       {&runtimeapi.ContainerFilter{State: running}, b},
		"created":       {&runtimeapi.ContainerFilter{State: created}, a + "," + c},
		"label":         {&runtimeapi.ContainerFilter{LabelSelector: map[string]string{"c": "a"}}, a},
		"pod+created":   {&runtimeapi.ContainerFilter{PodSandboxId: p1, State: created}, a},
		"label+wrong":   {&runtimeapi.ContainerFilter{LabelSelector: map[string]string{"c": "a"}, State: running}, ""},
		"unknown pod":   {&runtimeapi.ContainerFilter{PodSandboxId: "zzz"}, ""},
		"missing label": {&runtimeapi.ContainerFilter{LabelSelector: map[string]string{"nope": ""}}, ""},
	} {
		if got := list(tc.f); got != tc.want {
			t.Errorf("%s: %s, want %s", name, got, tc.want)
		}
	}
	_, err := ts.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: 42}}})
	wantCode(t, err, codes.InvalidArgument)

	// The streaming variant returns the same containers.
	stream, err := ts.rt.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: p1}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		r, err := stream.Recv()
		if err != nil {
			break
		}
		n += len(r.Containers)
	}
	if n != 2 {
		t.Fatalf("streamed %d containers", n)
	}
}

func TestImageService(t *testing.T) {
	// A registry that wants HTTP Basic credentials, over plain HTTP.
	reg := testregistry.StartTB(t)
	newRef := reg.Ref("new:1")
	pushed := mutateOrFail(t, busybox(t), func(c *v1.Config) { c.Cmd = []string{"echo", "new"} })
	if _, err := reg.Push("new:1", pushed); err != nil {
		t.Fatal(err)
	}
	reg.RequireBasicAuth("user", "pass")
	f := &spy{Adapter: newRealWith(t, image.Options{Keychain: authn.NewMultiKeychain(),
		Registries: map[string]config.Registry{reg.Host(): {Insecure: true, AllowPlainHTTPCredentials: true}}})}
	// The store holds the two images below and what is pulled.
	if err := f.RemoveImage(f.mustImageID(t)); err != nil {
		t.Fatal(err)
	}
	named := f.addImage(t, "example.com/named:1", "nobody:nogroup")
	f.addImage(t, "example.com/numeric:1", "1000:1000")
	ts := startServer(t, f)
	ctx := context.Background()
	// lastAuth is the Authorization header of the last request that had
	// one since the last call, "" for none.
	lastAuth := func() string {
		h := reg.AuthHeaders()
		reg.ResetRequests()
		if len(h) == 0 {
			return ""
		}
		return h[len(h)-1]
	}
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}

	r, err := ts.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: newRef},
		Auth: &runtimeapi.AuthConfig{Auth: "dXNlcjpwYXNz"}}) // user:pass
	if err != nil {
		t.Fatal(err)
	}
	pulled, _ := f.GetImage(newRef)
	if got := lastAuth(); r.ImageRef != pulled.ID.String() || got != basic("user", "pass") {
		t.Fatalf("pull: %v, auth %q", r, got)
	}
	for _, c := range []struct {
		a    *runtimeapi.AuthConfig
		want string
	}{
		{&runtimeapi.AuthConfig{Username: "u", Password: "p"}, basic("u", "p")},
		{&runtimeapi.AuthConfig{RegistryToken: "tok"}, "Bearer tok"},
		// An identity token is an OAuth2 refresh token: a Basic registry
		// is sent none; the runtime is still given it.
		{&runtimeapi.AuthConfig{IdentityToken: "id"}, ""},
		{&runtimeapi.AuthConfig{}, ""},
	} {
		ts.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: newRef}, Auth: c.a})
		if got := lastAuth(); got != c.want {
			t.Errorf("auth %v sent %q, want %q", c.a, got, c.want)
		}
		f.mu.Lock()
		a := f.lastAuth
		f.mu.Unlock()
		want := fmt.Sprint(c.a.Username, c.a.Password, c.a.RegistryToken, c.a.IdentityToken)
		got := ""
		if a != nil {
			got = fmt.Sprint(a.Username, a.Password, a.RegistryToken, a.IdentityToken)
		}
		if (a == nil) != (want == "") || got != want && a != nil {
			t.Errorf("auth %v became %+v", c.a, a)
		}
	}
	_, err = ts.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: newRef}, Auth: &runtimeapi.AuthConfig{Auth: "%%%"}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = ts.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref("absent:1")},
		Auth: &runtimeapi.AuthConfig{Username: "user", Password: "pass"}})
	wantCode(t, err, codes.NotFound)
	_, err = ts.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ""}})
	wantCode(t, err, codes.InvalidArgument)

	// ImageStatus: absent is an empty answer; USER becomes uid or username.
	st, err := ts.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "example.com/absent:1"}})
	if err != nil || st.Image != nil {
		t.Fatalf("absent: %v %v", st, err)
	}
	st, err = ts.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "example.com/named:1"}, Verbose: true})
	if err != nil || st.Image.Id != named.ID.String() || st.Image.Username != "nobody" || st.Image.Uid != nil || st.Image.Size != uint64(named.Size) ||
		st.Image.RepoTags[0] != "example.com/named:1" || st.Info["info"] == "" {
		t.Fatalf("named: %v %v", st, err)
	}
	st, _ = ts.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "example.com/numeric:1"}})
	if st.Image.Uid == nil || st.Image.Uid.Value != 1000 || st.Image.Username != "" {
		t.Fatalf("numeric: %v", st.Image)
	}
	configReads := f.called("ImageConfig")
	ts.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	ts.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if got := f.called("ImageConfig") - configReads; got != 1 { // only the pulled one is new
		t.Fatalf("image configs read %d times: they must be cached", got)
	}
	l, err := ts.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil || len(l.Images) != 3 {
		t.Fatalf("list: %v %v", l, err)
	}
	l, _ = ts.img.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "example.com/numeric:1"}}})
	if len(l.Images) != 1 || l.Images[0].RepoTags[0] != "example.com/numeric:1" {
		t.Fatalf("filtered: %v", l)
	}
	l, _ = ts.img.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "example.com/absent:1"}}})
	if len(l.Images) != 0 {
		t.Fatalf("filtered absent: %v", l)
	}

	is, err := ts.img.StreamImages(ctx, &runtimeapi.StreamImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := is.Recv()
	if err != nil || len(first.Images) != 3 {
		t.Fatalf("streamed images: %v %v", first, err)
	}

	// RemoveImage by tag removes the image (by ID, with all its names);
	// absent is success.
	for range 2 {
		if _, err := ts.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "example.com/named:1"}}); err != nil {
			t.Fatal(err)
		}
	}
	if f.called("RemoveImage:"+named.ID.String()) != 1 {
		t.Fatalf("calls: %v", f.calls)
	}
	fs, err := ts.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 {
		t.Fatal(fs, err)
	}
	u := fs.ImageFilesystems[0]
	mp, usage, err := f.ImageFsInfo() // the store's own numbers
	if err != nil {
		t.Fatal(err)
	}
	if u.UsedBytes.Value != uint64(usage.Bytes) || u.InodesUsed.Value != uint64(usage.Inodes) || u.FsId.Mountpoint != mp || u.Timestamp == 0 {
		t.Fatalf("fs info: %v", u)
	}
}

func TestExecSyncAndStreams(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	ctx := context.Background()
	podID := ts.runPod(t, sandboxConfig("web"))
	id := ts.createCtr(t, podID, sleeperConfig("app"))
	_, err := ts.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}})
	wantCode(t, err, codes.FailedPrecondition) // not running yet
	_, err = ts.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Stdout: true})
	wantCode(t, err, codes.FailedPrecondition)
	ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})

	// 17 MiB of output is cut to 16 MiB.
	big := []string{"sh", "-c", "dd if=/dev/zero bs=1048576 count=17 2>/dev/null; echo warn >&2; exit 7"}
	r, err := ts.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: big, Timeout: 10})
	if err != nil {
		t.Fatal(err)
	}
	gotCfg := f.lastExec()
	if len(r.Stdout) != 16<<20 || string(r.Stderr) != "warn\n" || r.ExitCode != 7 || gotCfg.Timeout != 10*time.Second || gotCfg.Cmd[0] != "sh" {
		t.Fatalf("stdout %d bytes, stderr %q, code %d, cfg %+v", len(r.Stdout), r.Stderr, r.ExitCode, gotCfg)
	}
	_, err = ts.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sleep", "9"}, Timeout: 1})
	wantCode(t, err, codes.DeadlineExceeded)
	_, err = ts.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id})
	wantCode(t, err, codes.InvalidArgument)

	e, err := ts.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Stdout: true})
	if err != nil || !strings.HasPrefix(e.Url, ts.StreamURL()+"/exec/") {
		t.Fatalf("exec url %v %v (server %s)", e, err, ts.StreamURL())
	}
	_, err = ts.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Tty: true, Stderr: true})
	wantCode(t, err, codes.InvalidArgument)
	a, err := ts.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdout: true})
	if err != nil || !strings.HasPrefix(a.Url, ts.StreamURL()+"/attach/") {
		t.Fatalf("attach url %v %v", a, err)
	}
	p, err := ts.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{80}})
	if err != nil || !strings.HasPrefix(p.Url, ts.StreamURL()+"/portforward/") {
		t.Fatalf("port-forward url %v %v", p, err)
	}
	_, err = ts.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "nope"})
	wantCode(t, err, codes.NotFound)
	if _, err := ts.rt.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil || f.called("ReopenLog") != 1 {
		t.Fatalf("reopen: %v", err)
	}
}

func TestUnimplementedRPCsSayWhy(t *testing.T) {
	ts := startServer(t, newReal(t))
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"CheckpointContainer": func() error {
			_, err := ts.rt.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{})
			return err
		},
		"CheckpointPod": func() error {
			_, err := ts.rt.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{})
			return err
		},
		"RestorePod": func() error {
			_, err := ts.rt.RestorePod(ctx, &runtimeapi.RestorePodRequest{})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "not implemented in runclet yet") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	for err, want := range map[error]codes.Code{
		errdefs.NotFound("x"):                              codes.NotFound,
		errdefs.AlreadyExists("x"):                         codes.AlreadyExists,
		errdefs.InvalidArgument("x"):                       codes.InvalidArgument,
		errdefs.FailedPrecondition("x"):                    codes.FailedPrecondition,
		errdefs.Unavailable("x"):                           codes.Unavailable,
		errdefs.DeadlineExceeded("x"):                      codes.DeadlineExceeded,
		fmt.Errorf("pull: %w", context.DeadlineExceeded):   codes.DeadlineExceeded,
		fmt.Errorf("pull: %w", context.Canceled):           codes.Canceled,
		notImplemented("stats are"):                        codes.Unimplemented,
		errors.New("boom"):                                 codes.Unknown,
		status.Error(codes.ResourceExhausted, "too many"):  codes.ResourceExhausted,
		fmt.Errorf("wrapped: %w", errdefs.NotFound("pod")): codes.NotFound,
	} {
		if got := Code(err); got != want {
			t.Errorf("%v: %s, want %s", err, got, want)
		}
		if st := status.Convert(toStatus(err)); st.Code() != want || st.Message() != err.Error() && want != codes.ResourceExhausted {
			t.Errorf("toStatus(%v) = %v", err, st)
		}
	}
	if toStatus(nil) != nil || Code(nil) != codes.OK {
		t.Fatal("nil")
	}
}

func TestRebuildFromDisk(t *testing.T) {
	f := newReal(t)
	ctx := context.Background()
	// A first server makes the pods and containers a restart finds.
	ts1 := startServer(t, f)
	ready := ts1.runPod(t, realSandboxConfig(t, "ready"))
	stopped := ts1.runPod(t, realSandboxConfig(t, "stopped"))
	// web runs until the test creates its go file, then exits 0.
	ctl := t.TempDir()
	web := sleeperConfig("web")
	web.Command = []string{"sh", "-c", "while [ ! -e /ctl/go ]; do sleep 0.05; done"}
	web.Mounts = []*runtimeapi.Mount{{ContainerPath: "/ctl", HostPath: ctl}}
	webID := ts1.createCtr(t, ready, web)
	old := sleeperConfig("old")
	old.Image.Image = f.mustImageID(t) // named by ID: the status still shows the tag
	old.Command = []string{"sh", "-c", "exit 1"}
	oldID := ts1.createCtr(t, stopped, old)
	for _, id := range []string{webID, oldID} {
		if _, err := ts1.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts1.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}
	// A pod made by `runclet run` (no namespace), and one a crash left
	// "preparing": everything made but the final record, as a daemon
	// killed just before CreatePod's last write leaves it.
	cli, err := f.CreatePod(ctx, pod.PodConfig{Name: "cli", Flavor: pod.FlavorRunc})
	if err != nil {
		t.Fatal(err)
	}
	crashed, err := f.CreatePod(ctx, pod.PodConfig{Name: "prepare", Namespace: "ns", UID: "u", Flavor: pod.FlavorRunc})
	if err != nil {
		t.Fatal(err)
	}
	recPath := filepath.Join(f.PodDir(crashed.ID), "pod.json")
	b, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	rec["state"] = string(pod.PodPreparing)
	if b, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ts1.Stop(time.Second)

	ts := startServer(t, f)
	r, _ := ts.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	var ids []string
	for _, p := range r.Items {
		ids = append(ids, p.Id+":"+p.State.String())
	}
	if want := fmt.Sprint([]string{ready + ":SANDBOX_READY", stopped + ":SANDBOX_NOTREADY"}); fmt.Sprint(ids) != want {
		t.Fatalf("pods after rebuild: %v, want %v", ids, want)
	}
	if _, _, err := f.PodStatus(ctx, crashed.ID); !errdefs.IsNotFound(err) {
		t.Fatalf("a pod left preparing by a crash was not removed: %v", err)
	}
	if _, _, err := f.PodStatus(ctx, stopped); err != nil {
		t.Fatalf("a stopped pod was removed (kubelet removes those): %v", err)
	}
	if _, _, err := f.PodStatus(ctx, cli.ID); err != nil {
		t.Fatalf("the CLI's pod was touched: %v", err)
	}
	c, _ := ts.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if len(c.Containers) != 2 || c.Containers[0].Image.Image != "example.com/app:1" {
		t.Fatalf("containers after rebuild: %v", c.Containers)
	}
	// The rebuilt containers are watched: an exit is still seen.
	if err := os.WriteFile(filepath.Join(ctl, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := ts.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: webID})
		if st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED && st.Status.Reason == "Completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exit after rebuild not seen: %v", st.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A supervisor that dies writes no exit file; the resync marks its pod.
func TestResyncSeesDeadSupervisor(t *testing.T) {
	f := newReal(t)
	ts := startServer(t, f, func(o *Options) { o.ResyncInterval = 20 * time.Millisecond })
	ctx := context.Background()
	podID := ts.runPod(t, sandboxConfig("web"))
	id := ts.createCtr(t, podID, sleeperConfig("app"))
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	// The pod's supervisor (this test's own) is killed.
	sup, _ := f.PodPids(podID)
	if sup <= 0 {
		t.Fatal("no supervisor pid recorded")
	}
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
		if st.Status.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY && st.ContainersStatuses[0].State == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead supervisor not noticed: %v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIndexStatesOnlyMoveForward(t *testing.T) {
	x := newIndex()
	p := &pod.Pod{ID: "p1", State: pod.PodReady}
	x.addPod(p)
	x.addContainer(&containerEntry{app: &pod.App{ID: "a1", PodID: "p1", State: pod.AppRunning}})
	if !x.updateApp(&pod.App{ID: "a1", PodID: "p1", State: pod.AppExited, ExitCode: 3}) {
		t.Fatal("known app not updated")
	}
	x.updateApp(&pod.App{ID: "a1", PodID: "p1", State: pod.AppRunning}) // a stale read
	if c, _ := x.container("a1"); c.app.State != pod.AppExited || c.app.ExitCode != 3 {
		t.Fatalf("state went backwards: %+v", c.app)
	}
	x.updatePod(&pod.Pod{ID: "p1", State: pod.PodStopped})
	x.updatePod(&pod.Pod{ID: "p1", State: pod.PodReady})
	if q, _, _ := x.sandbox("p1"); q.State != pod.PodStopped {
		t.Fatalf("pod state went backwards: %s", q.State)
	}
	x.removeContainer("a1")
	if x.updateApp(&pod.App{ID: "a1", PodID: "p1", State: pod.AppExited}) {
		t.Fatal("a late refresh resurrected a removed container")
	}
	x.removePod("p1")
	if x.updatePod(p) {
		t.Fatal("a late refresh resurrected a removed pod")
	}
	x.addPod(&pod.Pod{ID: "abc1"})
	x.addPod(&pod.Pod{ID: "abc2"})
	if _, _, err := x.sandbox("abc"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("ambiguous prefix: %v", err)
	}
	if _, _, err := x.sandbox("abc2"); err != nil {
		t.Fatal(err)
	}
}

// Without a hugetlb controller runc refuses any hugepage limit, and
// kubelet sends one (zero) with every container: it is dropped.
func TestHugepageLimitsWithoutController(t *testing.T) {
	r := &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}}
	if got := resources(r, Features{Hugetlb: true}).HugepageLimits; got["2MB"] != 0 || len(got) != 1 {
		t.Fatalf("with the controller: %v", got)
	}
	if got := resources(r, Features{}).HugepageLimits; got != nil {
		t.Fatalf("without the controller: %v, want none", got)
	}
}

// hostSandboxConfig is a sandbox config that asks for the host's network,
// PID and IPC namespaces, as a fly pod must.
func hostSandboxConfig(name string) *runtimeapi.PodSandboxConfig {
	cfg := sandboxConfig(name)
	cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE,
			UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE},
		},
	}}
	return cfg
}

// By default the CRI serves no fly handler: a RuntimeClass naming fly
// fails like one naming a handler that does not exist, before anything is
// made.
func TestFlyHandlerOffByDefault(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f)
	_, err := ts.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: hostSandboxConfig("fly"), RuntimeHandler: "fly"})
	wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(err.Error(), "unknown runtime handler") || f.called("CreatePod") != 0 {
		t.Fatalf("error %v, CreatePod called %d times", err, f.called("CreatePod"))
	}
	// A handler or default flavor fly without the opt-in is a
	// configuration error at start.
	for _, edit := range []func(*Options){
		func(o *Options) { o.RuntimeHandlers = map[string]string{"runc": "runc", "debug": "fly"} },
		func(o *Options) { o.DefaultFlavor = pod.FlavorFly },
	} {
		opts := Options{Runtime: f, StreamAddress: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		edit(&opts)
		if s, err := New(context.Background(), opts); !errdefs.IsInvalidArgument(err) {
			if s != nil {
				s.Stop(time.Second)
			}
			t.Errorf("New(%v, default %q) = %v, want invalid argument", opts.RuntimeHandlers, opts.DefaultFlavor, err)
		}
	}
}

// With the opt-in, a fly pod must ask for the host's namespaces: asking for
// its own network, PID, IPC or user namespace is refused, as is a
// container asking for its own; the status reports NODE, what it has.
func TestFlyPodsAskForHostNamespaces(t *testing.T) {
	f := newSpy(t)
	ts := startServer(t, f, func(o *Options) { o.AllowFly = true })
	ctx := context.Background()
	st, err := ts.rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
	}
	if fmt.Sprint(names) != "[ fly runc]" {
		t.Fatalf("handlers with fly enabled: %q", names)
	}
	for name, edit := range map[string]func(*runtimeapi.NamespaceOption){
		"pod-network":   func(n *runtimeapi.NamespaceOption) { n.Network = runtimeapi.NamespaceMode_POD },
		"container-pid": func(n *runtimeapi.NamespaceOption) { n.Pid = runtimeapi.NamespaceMode_CONTAINER },
		"pod-pid":       func(n *runtimeapi.NamespaceOption) { n.Pid = runtimeapi.NamespaceMode_POD },
		"pod-ipc":       func(n *runtimeapi.NamespaceOption) { n.Ipc = runtimeapi.NamespaceMode_POD },
		"userns": func(n *runtimeapi.NamespaceOption) {
			n.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
				Uids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}, Gids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}}
		},
	} {
		cfg := hostSandboxConfig(name)
		edit(cfg.Linux.SecurityContext.NamespaceOptions)
		_, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "fly"})
		wantCode(t, err, codes.InvalidArgument)
		if !strings.Contains(err.Error(), "flavor fly") {
			t.Errorf("%s: error %v does not say why", name, err)
		}
	}
	// No namespace options at all means POD network: refused too.
	_, err = ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig("plain"), RuntimeHandler: "fly"})
	wantCode(t, err, codes.InvalidArgument)
	if n := f.called("CreatePod"); n != 0 {
		t.Fatalf("refused fly pods reached the runtime %d times", n)
	}

	r, err := ts.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: hostSandboxConfig("host"), RuntimeHandler: "fly"})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: r.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	got := ps.GetStatus().GetLinux().GetNamespaces().GetOptions()
	if got.Network != runtimeapi.NamespaceMode_NODE || got.Pid != runtimeapi.NamespaceMode_NODE || got.Ipc != runtimeapi.NamespaceMode_NODE ||
		got.GetUsernsOptions().GetMode() != runtimeapi.NamespaceMode_NODE || ps.GetStatus().RuntimeHandler != "fly" {
		t.Fatalf("fly pod status %v, want NODE namespaces", ps.GetStatus())
	}
	ctr := ctrConfig("c", "busybox")
	ctr.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_NODE},
	}}
	_, err = ts.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: r.PodSandboxId, Config: ctr, SandboxConfig: hostSandboxConfig("host")})
	wantCode(t, err, codes.InvalidArgument)
}

// A fly pod recorded before fly pods had to ask for the host's namespaces
// reports what it has (NODE), not what it asked.
func TestFlySandboxReportsHostNamespaces(t *testing.T) {
	p := &pod.Pod{ID: "p", Flavor: pod.FlavorFly, HostNetwork: true, HostPID: true, HostIPC: true,
		Asked: &pod.NamespaceRequest{HostPID: true}, HostIPs: []string{"192.0.2.7"}}
	st := criSandboxStatus(sandboxView{pod: p})
	got := st.GetLinux().GetNamespaces().GetOptions()
	if got.Network != runtimeapi.NamespaceMode_NODE || got.Pid != runtimeapi.NamespaceMode_NODE || got.Ipc != runtimeapi.NamespaceMode_NODE {
		t.Fatalf("fly pod status namespaces = %v, want NODE", got)
	}
}
