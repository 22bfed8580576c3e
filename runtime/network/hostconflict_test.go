package network

import (
	"context"
	_ "embed"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/runclet/runclet/internal/testutil"
)

// podmanConflist is what Debian 12's podman package (4.3.1+ds1-8) ships as
// /etc/cni/net.d/87-podman-bridge.conflist (testdata, also read by the
// integration test): bridge cni-podman0 on 10.88.0.0/16, the old default
// subnet of runclet's built-in network.
//
//go:embed testdata/87-podman-bridge.conflist
var podmanConflist string

// otherBridge creates a bridge named after the test's tag, up, with addr,
// and deletes it at test end. Tests only ever touch bridges they made.
func otherBridge(t *testing.T, name string, addr netip.Prefix) {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("create bridge %s: %v", name, err)
	}
	t.Cleanup(func() { deleteLink(name) })
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
	if err := netlink.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s on %s: %v", addr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

func deleteLink(name string) {
	if l, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(l)
	}
}

func linkPresent(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// A second bridge on the built-in network's subnet: the first pod is
// refused with an error naming the network, its subnet and the other
// bridge, before anything is created.
func TestSetupRefusesSubnetOfAnotherBridge(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap")
	e := newTestEnv(t, 24)
	other := "rclov" + e.tag
	otherBridge(t, other, netip.PrefixFrom(e.subnet.Addr().Next().Next(), e.subnet.Bits()))

	m := e.manager(t)
	id, ns := e.newPod(t, m, "a")
	_, err := m.Setup(context.Background(), id, ns, nil)
	if !isFailedPrecondition(err) {
		t.Fatalf("Setup on a subnet another bridge has: %v, want failed precondition", err)
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{`network "runclet"`, e.subnet.String(), "interface " + other, "route " + e.subnet.String() + " dev " + other, "default_subnet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if linkPresent(e.bridge) {
		t.Fatal("the refused network's bridge was created")
	}
	if in := inspectPod(t, ns); in.loUp || in.eth0 {
		t.Fatalf("refused Setup touched the netns: %+v", in)
	}
}

// The case: runclet's built-in bridge exists with pods on it, and
// a config for another bridge network on the same subnet appears in
// conf_dir (podman's). The next pod is refused naming both, instead of
// going to a network the host cannot reach.
func TestSetupRefusesConfDirNetworkOverlappingBuiltinBridge(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap")
	e := newTestEnv(t, 24)
	m := e.manager(t)
	ctx := context.Background()
	idA, nsA := e.newPod(t, m, "a")
	if _, err := m.Setup(ctx, idA, nsA, nil); err != nil {
		t.Fatal(err)
	}
	name := "rcltest-other-" + e.tag
	otherBr := "rclot" + e.tag
	// Only there if the check failed and the plugin made it: then it is ours.
	t.Cleanup(func() { deleteLink(otherBr) })
	writeConf(t, e.confDir, "10-other.conflist", map[string]any{"cniVersion": "1.0.0", "name": name,
		"plugins": []any{map[string]any{"type": "bridge", "bridge": otherBr, "isGateway": true,
			"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir,
				"ranges": [][]map[string]string{{{"subnet": e.subnet.String()}}}}}}})
	idB, nsB := e.newPod(t, m, "b")
	_, err := m.Setup(ctx, idB, nsB, nil)
	if !isFailedPrecondition(err) {
		t.Fatalf("Setup: %v, want failed precondition", err)
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{`network "` + name + `"`, "10-other.conflist", "bridge " + otherBr, e.subnet.String(),
		"interface " + e.bridge, "runclet gc", "network.name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if linkPresent(otherBr) {
		t.Fatal("the refused network's bridge was created")
	}
}

// podman's packaged conflist sits in conf_dir, sorted before anything of
// runclet's; runclet keeps the network its config names, and the pod is
// reachable from the host.
func TestPodmanConflistBesideChosenNetwork(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap")
	podmanBridgeBefore := linkPresent("cni-podman0")
	for _, chosen := range []string{"builtin", "conf"} {
		t.Run(chosen, func(t *testing.T) {
			e := newTestEnv(t, 24)
			writeConf(t, e.confDir, "87-podman-bridge.conflist", podmanConflist)
			want := DefaultNetworkName
			if chosen == "conf" {
				want = "rcltest-own-" + e.tag
				writeConf(t, e.confDir, "90-own.conflist", map[string]any{"cniVersion": "1.0.0", "name": want,
					"plugins": []any{map[string]any{"type": "bridge", "bridge": e.bridge, "isGateway": true, "ipMasq": true,
						"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir,
							"ranges": [][]map[string]string{{{"subnet": e.subnet.String()}}}}}}})
			}
			e.cfg.Name = want
			m := e.manager(t)
			if got := m.NetworkName(); got != want {
				t.Fatalf("network %q, want %q (podman's config sorts first)", got, want)
			}
			if err := m.Ready(); err != nil {
				t.Fatal(err)
			}
			id, ns := e.newPod(t, m, "a")
			att, err := m.Setup(context.Background(), id, ns, nil)
			if err != nil {
				t.Fatal(err)
			}
			if att.Network != want || !e.subnet.Contains(att.IPs[0].Addr()) {
				t.Fatalf("attachment %+v, want network %s in %s", att, want, e.subnet)
			}
			serveInPod(t, ns, ":8080", "hello from the pod")
			got, err := readAll(net.JoinHostPort(att.IPs[0].Addr().String(), "8080"))
			if err != nil || got != "hello from the pod" {
				t.Fatalf("host to pod %s: %q, %v", att.IPs[0].Addr(), got, err)
			}
			if !podmanBridgeBefore && linkPresent("cni-podman0") {
				t.Fatal("podman's network was used")
			}
		})
	}
}

// Without network.name, the choice is the first valid config by file name;
// a change from the network recorded at the last pod is a warning, and a
// configured name found nowhere is a clear error for Ready.
func TestNetworkChoiceByNameAndChangeWarning(t *testing.T) {
	e := newTestEnvNoRoot(t)
	logs := captureLog(t)
	m := e.manager(t)
	m.recordChoice(m.current())
	if got := m.NetworkName(); got != DefaultNetworkName {
		t.Fatalf("empty conf dir: %q", got)
	}
	writeConf(t, e.confDir, "87-podman-bridge.conflist", podmanConflist)
	writeConf(t, e.confDir, "90-own.conflist", map[string]any{"cniVersion": "1.0.0", "name": "own",
		"plugins": []any{map[string]any{"type": "bridge"}}})
	// A new runclet process (a restart) reads the record.
	logs.Reset()
	m = e.manager(t)
	if got := m.NetworkName(); got != "podman" {
		t.Fatalf("no name: %q, want podman (first file)", got)
	}
	m.recordChoice(m.current())
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "previous=runclet") ||
		!strings.Contains(logs.String(), "network=podman") {
		t.Fatalf("no warning for the change of network:\n%s", logs)
	}
	logs.Reset()
	m.recordChoice(m.current())
	m = e.manager(t)
	m.recordChoice(m.current())
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("warning without a change:\n%s", logs)
	}

	for name, want := range map[string]string{"own": "own", "podman": "podman", DefaultNetworkName: DefaultNetworkName} {
		e.cfg.Name = name
		if got := e.manager(t).NetworkName(); got != want {
			t.Errorf("name %q: network %q", name, got)
		}
	}
	e.cfg.Name = "nowhere"
	err := e.manager(t).Ready()
	if !isFailedPrecondition(err) || !strings.Contains(err.Error(), `"nowhere"`) ||
		!strings.Contains(err.Error(), `"podman" (87-podman-bridge.conflist)`) || !strings.Contains(err.Error(), `"own" (90-own.conflist)`) {
		t.Fatalf("unknown name: %v", err)
	}
}

// "auto" skips a candidate subnet a bridge already has, records its
// choice and keeps it across restarts; with no free candidate it says
// which setting to change.
func TestAutoSubnetSkipsSubnetInUse(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap")
	e := newTestEnv(t, 24)
	used := e.subnet
	var free netip.Prefix
	for free = freeSubnet(t, 24); free == used; free = freeSubnet(t, 24) {
	}
	blocker := "rclau" + e.tag
	otherBridge(t, blocker, netip.PrefixFrom(used.Addr().Next(), 24))

	e.cfg.DefaultSubnet = AutoSubnet
	e.cfg.candidates = []netip.Prefix{used, free}
	m := e.manager(t)
	got, err := m.BuiltinSubnet()
	if err != nil || got != free {
		t.Fatalf("auto: %s, %v; want %s (%s is on %s)", got, err, free, used, blocker)
	}
	var rec builtinRecord
	data, _ := os.ReadFile(filepath.Join(e.cfg.StateDir, builtinRecordFile))
	if err := json.Unmarshal(data, &rec); err != nil || rec.Subnet != free {
		t.Fatalf("record %s: %v", data, err)
	}
	id, ns := e.newPod(t, m, "a")
	att, err := m.Setup(context.Background(), id, ns, nil)
	if err != nil || !free.Contains(att.IPs[0].Addr()) {
		t.Fatalf("Setup on the auto subnet: %+v, %v", att, err)
	}

	// Stable across restarts even when the first candidate became free.
	if l, err := netlink.LinkByName(blocker); err == nil {
		netlink.LinkDel(l)
	}
	if got, err := e.manager(t).BuiltinSubnet(); err != nil || got != free {
		t.Fatalf("after restart: %s, %v; want %s", got, err, free)
	}

	// Taken meanwhile by somebody else while no pod is on it: the next
	// Setup of this long-running manager removes the unused bridge and
	// picks anew, with a warning; the first candidate is free again by now.
	if err := m.Teardown(context.Background(), id, ns, nil); err != nil {
		t.Fatal(err)
	}
	taker := "rclat" + e.tag
	otherBridge(t, taker, netip.PrefixFrom(free.Addr().Next().Next(), 24))
	logs := captureLog(t)
	id2, ns2 := e.newPod(t, m, "b")
	att, err = m.Setup(context.Background(), id2, ns2, nil)
	if err != nil || !used.Contains(att.IPs[0].Addr()) {
		t.Fatalf("Setup after %s took %s: %+v, %v; want an address in %s", taker, free, att, err, used)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), taker) {
		t.Fatalf("no warning naming the new holder of the subnet:\n%s", logs)
	}
	if got, err := e.manager(t).BuiltinSubnet(); err != nil || got != used {
		t.Fatalf("record after the re-pick: %s, %v", got, err)
	}
	// With a pod on it, the subnet is kept and the conflict is an error.
	otherBridge(t, "rclau"+e.tag, netip.PrefixFrom(used.Addr().Next().Next(), 24))
	id3, ns3 := e.newPod(t, m, "c")
	if _, err := m.Setup(context.Background(), id3, ns3, nil); !isFailedPrecondition(err) || !strings.Contains(err.Error(), "rclau"+e.tag) {
		t.Fatalf("Setup with pod b on the subnet and %s taking it: %v", "rclau"+e.tag, err)
	}

	// Nothing free: say what to set.
	e2 := newTestEnv(t, 24)
	otherBridge(t, "rclau"+e2.tag, netip.PrefixFrom(e2.subnet.Addr().Next(), 24))
	e2.cfg.DefaultSubnet = AutoSubnet
	e2.cfg.candidates = []netip.Prefix{e2.subnet}
	if _, err := e2.manager(t).BuiltinSubnet(); !isFailedPrecondition(err) || !strings.Contains(err.Error(), "network.default_subnet") {
		t.Fatalf("no free candidate: %v", err)
	}
}

// `runclet gc` removes the built-in bridge when no pod uses it, and only then.
func TestRemoveUnusedBridge(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	requirePlugins(t, "bridge", "host-local", "portmap")
	e := newTestEnv(t, 24)
	m := e.manager(t)
	ctx := context.Background()
	if br, err := m.RemoveUnusedBridge(ctx); err != nil || br != "" {
		t.Fatalf("no bridge yet: %q, %v", br, err)
	}
	id, ns := e.newPod(t, m, "a")
	if _, err := m.Setup(ctx, id, ns, nil); err != nil {
		t.Fatal(err)
	}
	if br, err := m.RemoveUnusedBridge(ctx); err != nil || br != "" || !linkPresent(e.bridge) {
		t.Fatalf("with a pod on it: %q, %v", br, err)
	}
	if err := m.Teardown(ctx, id, ns, nil); err != nil {
		t.Fatal(err)
	}
	if br, err := m.RemoveUnusedBridge(ctx); err != nil || br != e.bridge || linkPresent(e.bridge) {
		t.Fatalf("unused: %q, %v, still there: %v", br, err, linkPresent(e.bridge))
	}
	// The next pod brings it back.
	id2, ns2 := e.newPod(t, m, "b")
	if _, err := m.Setup(ctx, id2, ns2, nil); err != nil || !linkPresent(e.bridge) {
		t.Fatalf("Setup after removal: %v", err)
	}
}

// BenchmarkCheckHostOverlap is the cost the check adds to every Setup on a
// bridge network.
func BenchmarkCheckHostOverlap(b *testing.B) {
	m, err := New(Config{ConfDir: b.TempDir(), StateDir: b.TempDir(), DefaultSubnet: "10.244.255.0/24"})
	if err != nil {
		b.Fatal(err)
	}
	nc := m.current()
	list, err := m.listFor(nc)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := m.checkHostOverlap(nc, list); err != nil {
			b.Fatal(err)
		}
	}
}
