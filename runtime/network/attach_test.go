package network

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
)

func TestDefaultNetworkTwoPods(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap", "loopback")
	e := newTestEnv(t, 24)
	m := e.manager(t)
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if m.NetworkName() != DefaultNetworkName {
		t.Fatalf("network %q, want the built-in %q", m.NetworkName(), DefaultNetworkName)
	}
	ctx := context.Background()

	idA, nsA := e.newPod(t, m, "a")
	idB, nsB := e.newPod(t, m, "b")
	attA, err := m.Setup(ctx, idA, nsA, nil, WithKubernetesPod("default", "pod-a", "uid-a"))
	if err != nil {
		t.Fatalf("Setup a: %v", err)
	}
	attB, err := m.Setup(ctx, idB, nsB, nil)
	if err != nil {
		t.Fatalf("Setup b: %v", err)
	}
	if _, err := m.Setup(ctx, idA, nsA, nil); err == nil {
		t.Fatal("second Setup of the same pod succeeded")
	}

	// Attachments: one address each, in the subnet, different; gateway .1.
	for _, att := range []*Attachment{attA, attB} {
		if att.Network != DefaultNetworkName || att.IfName != "eth0" || len(att.IPs) != 1 {
			t.Fatalf("attachment %+v", att)
		}
		if !e.subnet.Contains(att.IPs[0].Addr()) || att.IPs[0].Bits() != 24 {
			t.Fatalf("pod IP %s not in %s", att.IPs[0], e.subnet)
		}
		if att.Gateway != e.subnet.Addr().Next() {
			t.Fatalf("gateway %s, want %s", att.Gateway, e.subnet.Addr().Next())
		}
		if _, err := net.ParseMAC(att.MAC); err != nil {
			t.Fatalf("MAC %q: %v", att.MAC, err)
		}
		b, _ := json.Marshal(att)
		var back Attachment
		if err := json.Unmarshal(b, &back); err != nil || back.IPs[0] != att.IPs[0] || back.Gateway != att.Gateway {
			t.Fatalf("JSON round trip: %s -> %+v, %v", b, back, err)
		}
	}
	if attA.IPs[0] == attB.IPs[0] {
		t.Fatalf("both pods got %s", attA.IPs[0])
	}

	// Inside: lo up, eth0 with the attachment's address.
	inA, inB := inspectPod(t, nsA), inspectPod(t, nsB)
	for i, in := range []podNet{inA, inB} {
		att := []*Attachment{attA, attB}[i]
		if !in.loUp || !in.eth0 || !slices.Contains(in.addrs, att.IPs[0]) {
			t.Fatalf("pod %d netns: %+v, want lo up and eth0 %s", i, in, att.IPs[0])
		}
	}
	// Host: the bridge, with the pods' veth peers on it.
	br, err := netlink.LinkByName(e.bridge)
	if err != nil {
		t.Fatalf("bridge %s missing: %v", e.bridge, err)
	}
	if br.Type() != "bridge" {
		t.Fatalf("%s is a %s", e.bridge, br.Type())
	}
	if ports := bridgePorts(t, e.bridge); len(ports) != 2 {
		t.Fatalf("bridge ports %v, want 2", ports)
	}
	if got := ipamFiles(t, e.ipamDir, DefaultNetworkName); len(got) != 2 {
		t.Fatalf("host-local allocations %v, want 2", got)
	}

	// Pod to pod: a listener in A, dialed from inside B.
	addr := serveInPod(t, nsA, net.JoinHostPort(attA.IPs[0].Addr().String(), "0"), "hello from a")
	var got string
	if err := WithNetNS(nsB, func() error {
		var err error
		got, err = readAll(addr.String())
		return err
	}); err != nil || got != "hello from a" {
		t.Fatalf("B -> A %s: %q, %v", addr, got, err)
	}

	// Teardown A twice; B stays.
	for i := 0; i < 2; i++ {
		if err := m.Teardown(ctx, idA, nsA, nil); err != nil {
			t.Fatalf("Teardown a #%d: %v", i+1, err)
		}
	}
	inA = inspectPod(t, nsA)
	if inA.eth0 || inA.loUp {
		t.Fatalf("after teardown pod a still has %+v", inA)
	}
	if linkExists(inA.peerIdx) && inA.peerIdx != 0 {
		t.Fatal("veth peer of a left on the host")
	}
	if ports := bridgePorts(t, e.bridge); len(ports) != 1 {
		t.Fatalf("bridge ports after teardown of a: %v", ports)
	}
	if got := ipamFiles(t, e.ipamDir, DefaultNetworkName); len(got) != 1 || got[0] != attB.IPs[0].Addr().String() {
		t.Fatalf("allocations after teardown of a: %v", got)
	}
	if err := RemoveNetNS(nsA); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx, idA, nsA, nil); err != nil {
		t.Fatalf("Teardown after RemoveNetNS: %v", err)
	}

	// B: teardown, then remove; nothing remains.
	if err := m.Teardown(ctx, idB, nsB, nil); err != nil {
		t.Fatal(err)
	}
	if err := RemoveNetNS(nsB); err != nil {
		t.Fatal(err)
	}
	if ports := bridgePorts(t, e.bridge); len(ports) != 0 {
		t.Fatalf("bridge ports left: %v", ports)
	}
	if got := ipamFiles(t, e.ipamDir, DefaultNetworkName); len(got) != 0 {
		t.Fatalf("allocations left: %v", got)
	}
	if mountinfoHas(nsA) || mountinfoHas(nsB) {
		t.Fatal("netns mounts left")
	}
	if res, _ := os.ReadDir(filepath.Join(e.cacheDir, "results")); len(res) != 0 {
		t.Fatalf("libcni cache entries left: %v", res)
	}
	e.assertNoIptablesTraces(t)
}

func TestPortMapping(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap", "loopback")
	e := newTestEnv(t, 24)
	m := e.manager(t)
	ctx := context.Background()
	id, ns := e.newPod(t, m, "pm")

	hostPort := int32(20000 + rand.IntN(20000))
	ports := []PortMapping{
		{ContainerPort: 8080, HostPort: hostPort},                      // tcp by default
		{Protocol: "UDP", ContainerPort: 5353, HostPort: hostPort + 1}, // case-insensitive
		{ContainerPort: 9999, HostPort: 0},                             // not published
	}
	att, err := m.Setup(ctx, id, ns, ports)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	serveInPod(t, ns, ":8080", "through portmap")

	save := iptablesSave(t)
	dport := "--dport " + strconv.Itoa(int(hostPort))
	if !strings.Contains(save, dport) || !strings.Contains(save, "--dport "+strconv.Itoa(int(hostPort)+1)) {
		t.Fatalf("no DNAT rules for the host ports:\n%s", save)
	}

	// From the host, to the bridge gateway address and to 127.0.0.1
	// (portmap's snat sets route_localnet on the bridge for the latter).
	for _, host := range []string{att.Gateway.String(), "127.0.0.1"} {
		target := net.JoinHostPort(host, strconv.Itoa(int(hostPort)))
		got, err := readAll(target)
		if err != nil || got != "through portmap" {
			t.Fatalf("host -> %s: %q, %v", target, got, err)
		}
	}

	if err := m.Teardown(ctx, id, ns, nil); err != nil { // mappings from the cache
		t.Fatal(err)
	}
	if save := iptablesSave(t); strings.Contains(save, dport) || strings.Contains(save, id) {
		t.Fatalf("DNAT rules left after teardown:\n%s", save)
	}
	if _, err := readAll(net.JoinHostPort(att.Gateway.String(), strconv.Itoa(int(hostPort)))); err == nil {
		t.Fatal("host port still forwarded after teardown")
	}
	e.assertNoIptablesTraces(t)
}

func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestTeardownAfterNetNSGone(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap", "loopback")
	e := newTestEnv(t, 24)
	m := e.manager(t)
	ctx := context.Background()
	id, ns := e.newPod(t, m, "gone")
	hostPort := int32(20000 + rand.IntN(20000))
	if _, err := m.Setup(ctx, id, ns, []PortMapping{{ContainerPort: 80, HostPort: hostPort}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(iptablesSave(t), id) {
		t.Fatal("expected per-pod iptables rules after Setup")
	}
	in := inspectPod(t, ns)

	// The pod's namespace disappears first (crash, reboot, manual cleanup).
	if err := RemoveNetNS(ns); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := m.Teardown(ctx, id, ns, nil); err != nil {
			t.Fatalf("Teardown #%d without netns: %v", i+1, err)
		}
	}
	if got := ipamFiles(t, e.ipamDir, DefaultNetworkName); len(got) != 0 {
		t.Fatalf("IP not released: %v", got)
	}
	if linkExists(in.peerIdx) {
		t.Fatal("host veth left")
	}
	if save := iptablesSave(t); strings.Contains(save, id) || strings.Contains(save, e.subnetText()) {
		t.Fatalf("iptables rules left:\n%s", save)
	}
}

func TestSetupRollbackIPAMExhausted(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap", "loopback")
	// A /30 has one usable pod address (.1 is the gateway).
	e := newTestEnv(t, 30)
	m := e.manager(t)
	ctx := context.Background()
	id1, ns1 := e.newPod(t, m, "one")
	if _, err := m.Setup(ctx, id1, ns1, nil); err != nil {
		t.Fatalf("first pod: %v", err)
	}
	id2, ns2 := e.newPod(t, m, "two")
	_, err := m.Setup(ctx, id2, ns2, []PortMapping{{ContainerPort: 80, HostPort: int32(20000 + rand.IntN(20000))}})
	if err == nil {
		t.Fatal("Setup in an exhausted subnet succeeded")
	}
	t.Logf("expected error: %v", err)
	if !strings.Contains(err.Error(), id2) {
		t.Errorf("error does not name the pod: %v", err)
	}
	in := inspectPod(t, ns2)
	if in.eth0 || in.loUp {
		t.Fatalf("failed pod's netns not rolled back: %+v", in)
	}
	if ports := bridgePorts(t, e.bridge); len(ports) != 1 {
		t.Fatalf("bridge ports %v, want only the first pod's", ports)
	}
	if got := ipamFiles(t, e.ipamDir, DefaultNetworkName); len(got) != 1 {
		t.Fatalf("allocations %v, want only the first pod's", got)
	}
	if strings.Contains(iptablesSave(t), id2) {
		t.Fatal("iptables rules of the failed pod left")
	}
	if res, _ := filepath.Glob(filepath.Join(e.cacheDir, "results", "*"+id2+"*")); len(res) != 0 {
		t.Fatalf("cache entries of the failed pod: %v", res)
	}
}

func TestSetupRollbackLaterPluginFails(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "tuning", "loopback")
	e := newTestEnv(t, 24)
	// bridge succeeds (veth, IP, masquerade), then tuning fails.
	writeConf(t, e.confDir, "10-failing.conflist", map[string]any{
		"cniVersion": "1.0.0",
		"name":       "rcltest-fail-" + e.tag,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": e.bridge, "isGateway": true, "ipMasq": true,
				"ipam": map[string]any{"type": "host-local", "subnet": e.subnet.String(), "dataDir": e.ipamDir},
			},
			map[string]any{"type": "tuning", "sysctl": map[string]string{"net.ipv4.conf.eth0.rcltest_no_such_knob": "1"}},
		},
	})
	m := e.manager(t)
	id, ns := e.newPod(t, m, "tun")
	_, err := m.Setup(context.Background(), id, ns, nil)
	if err == nil {
		t.Fatal("Setup with a failing tuning plugin succeeded")
	}
	t.Logf("expected error: %v", err)
	if !strings.Contains(err.Error(), "tuning") {
		t.Errorf("error does not name the failing plugin: %v", err)
	}
	if in := inspectPod(t, ns); in.eth0 || in.loUp {
		t.Fatalf("netns not rolled back: %+v", in)
	}
	if ports := bridgePorts(t, e.bridge); len(ports) != 0 {
		t.Fatalf("veth left on the bridge: %v", ports)
	}
	if got := ipamFiles(t, e.ipamDir, "rcltest-fail-"+e.tag); len(got) != 0 {
		t.Fatalf("IP not released: %v", got)
	}
	if strings.Contains(iptablesSave(t), id) {
		t.Fatal("masquerade rules of the failed pod left")
	}
}

func TestConfDirNetworkIsUsed(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "ptp", "host-local", "loopback")
	e := newTestEnv(t, 24)
	name := "rcltest-ptp-" + e.tag
	writeConf(t, e.confDir, "50-ptp.conflist", map[string]any{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{map[string]any{
			"type": "ptp", "ipMasq": true,
			"ipam": map[string]any{"type": "host-local", "subnet": e.subnet.String(), "dataDir": e.ipamDir,
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}}},
		}},
	})
	m := e.manager(t)
	if m.NetworkName() != name {
		t.Fatalf("network %q, want %q from the config dir", m.NetworkName(), name)
	}
	id, ns := e.newPod(t, m, "ptp")
	att, err := m.Setup(context.Background(), id, ns, nil)
	if err != nil {
		t.Fatal(err)
	}
	if att.Network != name || len(att.IPs) != 1 || !e.subnet.Contains(att.IPs[0].Addr()) {
		t.Fatalf("attachment %+v", att)
	}
	in := inspectPod(t, ns)
	if !in.eth0 || !in.loUp || !linkExists(in.peerIdx) {
		t.Fatalf("pod netns %+v", in)
	}
	if _, err := netlink.LinkByName(e.bridge); err == nil {
		t.Fatal("the built-in bridge was created although a config exists")
	}
	// The config changes under a running pod: teardown still uses the one
	// the pod was set up with (from the cache).
	if err := os.Remove(filepath.Join(e.confDir, "50-ptp.conflist")); err != nil {
		t.Fatal(err)
	}
	if m.NetworkName() != DefaultNetworkName {
		t.Fatalf("after removing the config: network %q", m.NetworkName())
	}
	if err := m.Teardown(context.Background(), id, ns, nil); err != nil {
		t.Fatal(err)
	}
	if linkExists(in.peerIdx) {
		t.Fatal("ptp host veth left")
	}
	if got := ipamFiles(t, e.ipamDir, name); len(got) != 0 {
		t.Fatalf("IP not released: %v", got)
	}
	if strings.Contains(iptablesSave(t), id) {
		t.Fatal("ptp masquerade rules left")
	}
}

func TestSetupInvalidArguments(t *testing.T) {
	e := newTestEnvNoRoot(t)
	m := e.manager(t)
	plain := filepath.Join(e.dir, "plain")
	os.WriteFile(plain, nil, 0o644)
	if _, err := m.Setup(context.Background(), "bad/id", plain, nil); !errdefs.IsInvalidArgument(err) {
		t.Fatal("invalid pod ID accepted")
	}
	for _, ns := range []string{filepath.Join(e.dir, "nope"), plain} {
		if _, err := m.Setup(context.Background(), "pod", ns, nil); !isFailedPrecondition(err) {
			t.Fatalf("netns %s: %v", ns, err)
		}
	}
	if err := m.Teardown(context.Background(), "bad/id", "", nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Teardown with a bad ID: %v", err)
	}
}

// newTestEnvNoRoot is a testEnv for tests that never touch the network.
func newTestEnvNoRoot(t *testing.T) *testEnv {
	dir := t.TempDir()
	e := &testEnv{tag: "none", dir: dir, confDir: filepath.Join(dir, "net.d")}
	os.MkdirAll(e.confDir, 0o755)
	e.cfg = Config{
		ConfDir: e.confDir, CacheDir: filepath.Join(dir, "cache"), IPAMDataDir: filepath.Join(dir, "networks"),
		DefaultBridge: "rcltestnone", DefaultSubnet: "10.244.255.0/24", StateDir: filepath.Join(dir, "state"),
	}
	return e
}

func writeConf(t *testing.T, dir, name string, v any) {
	t.Helper()
	var data []byte
	switch v := v.(type) {
	case string:
		data = []byte(v)
	default:
		var err error
		if data, err = json.MarshalIndent(v, "", "  "); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentSetupTeardown(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap", "loopback")
	e := newTestEnv(t, 24)
	m := e.manager(t)
	ctx := context.Background()
	const n = 6
	ids, nss := make([]string, n), make([]string, n)
	for i := range ids {
		ids[i], nss[i] = e.newPod(t, m, "c"+strconv.Itoa(i))
	}
	atts := make([]*Attachment, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			atts[i], errs[i] = m.Setup(ctx, ids[i], nss[i], nil)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Setup %d: %v", i, err)
		}
		ip := atts[i].IPs[0].String()
		if seen[ip] {
			t.Fatalf("address %s handed out twice", ip)
		}
		seen[ip] = true
	}
	if ports := bridgePorts(t, e.bridge); len(ports) != n {
		t.Fatalf("bridge ports %v, want %d", ports, n)
	}
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Teardown(ctx, ids[i], nss[i], nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Teardown %d: %v", i, err)
		}
	}
	if got := ipamFiles(t, e.ipamDir, DefaultNetworkName); len(got) != 0 {
		t.Fatalf("allocations left: %v", got)
	}
	if ports := bridgePorts(t, e.bridge); len(ports) != 0 {
		t.Fatalf("bridge ports left: %v", ports)
	}
}

// CNI_ARGS is "K=V;K=V": a pod identity with ';' or '=' would add
// arguments of its own, such as IP= (which host-local honours).
func TestSetupRefusesCNIArgsInjection(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "loopback")
	e := newTestEnv(t, 24)
	m := e.manager(t)
	id, ns := e.newPod(t, m, "inject")
	chosen := e.subnet.Addr().Next().Next().Next().Next().Next()
	for _, opt := range []SetupOption{
		WithKubernetesPod("default", "pod", "u;IP="+chosen.String()),
		WithKubernetesPod("default;IP="+chosen.String(), "pod", "u"),
		WithKubernetesPod("default", "pod=x", "u"),
	} {
		att, err := m.Setup(context.Background(), id, ns, nil, opt)
		if err == nil {
			t.Errorf("setup with injected CNI_ARGS succeeded, pod IPs %v (injected %s)", att.PodIPs(), chosen)
			m.Teardown(context.Background(), id, ns, nil)
			continue
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("want InvalidArgument, got %v", err)
		}
	}
}
