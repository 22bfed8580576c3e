package network

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/vishvananda/netlink"
)

// whyRoot is why most tests here need root.
const whyRoot = "creates network namespaces, bridges and iptables rules"

// Root tests create real namespaces, bridges and iptables rules, all named
// after a random per-test tag (bridge rcltest<tag>, pod IDs rcltest-<tag>-*,
// a random 10.244.N.0/24 subnet), and remove them in t.Cleanup.

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	var restore func()
	if os.Geteuid() == 0 {
		restore = snapshotHostNetState()
	}
	code := m.Run()
	if restore != nil {
		restore()
	}
	os.Exit(code)
}

// snapshotHostNetState records the host state the plugins change outside
// of what a test owns (net.ipv4.ip_forward, turned on by the bridge plugin
// with isGateway, and the shared CNI-HOSTPORT-* nat chains portmap creates
// once and never removes) and returns a function that puts back what this
// test run introduced, as long as nobody else appears to be using it.
func snapshotHostNetState() func() {
	const fwd = "/proc/sys/net/ipv4/ip_forward"
	fwdBefore, _ := os.ReadFile(fwd)
	chainsBefore := natChains()
	bridgesBefore := hostBridges()
	return func() {
		// Put ip_forward back only if no bridge appeared meanwhile: somebody
		// else's pods on it may need forwarding now.
		quiet := true
		for b := range hostBridges() {
			if !bridgesBefore[b] {
				quiet = false
			}
		}
		if quiet && strings.TrimSpace(string(fwdBefore)) == "0" {
			if now, _ := os.ReadFile(fwd); strings.TrimSpace(string(now)) == "1" {
				os.WriteFile(fwd, []byte("0\n"), 0o644)
			}
		}
		removeNewHostportChains(chainsBefore)
	}
}

func hostBridges() map[string]bool {
	out := map[string]bool{}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if l.Type() == "bridge" {
			out[l.Attrs().Name] = true
		}
	}
	return out
}

func natChains() map[string]bool {
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		return nil
	}
	chains := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, ":") {
			chains[strings.Fields(l[1:])[0]] = true
		}
	}
	return chains
}

// removeNewHostportChains deletes portmap's shared chains if this run
// created them and no port mapping (of anyone) is left in them.
func removeNewHostportChains(before map[string]bool) {
	if before == nil {
		return
	}
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		return
	}
	lines := strings.Split(string(out), "\n")
	var fresh []string
	for _, l := range lines {
		if strings.HasPrefix(l, ":CNI-HOSTPORT-") {
			if c := strings.Fields(l[1:])[0]; !before[c] {
				fresh = append(fresh, c)
			}
		}
		if strings.HasPrefix(l, "-A CNI-HOSTPORT-DNAT ") {
			return // live mappings: in use
		}
	}
	isFresh := func(c string) bool {
		for _, f := range fresh {
			if f == c {
				return true
			}
		}
		return false
	}
	for _, l := range lines {
		args, err := splitRuleSpec(l)
		if err != nil || len(args) < 2 || args[0] != "-A" || isFresh(args[1]) || !isFresh(optionValue(args, "-j")) {
			continue
		}
		args[0] = "-D"
		exec.Command("iptables", append([]string{"-w", "-t", "nat"}, args...)...).Run()
	}
	for _, c := range fresh {
		exec.Command("iptables", "-w", "-t", "nat", "-F", c).Run()
	}
	for _, c := range fresh {
		exec.Command("iptables", "-w", "-t", "nat", "-X", c).Run()
	}
}

func requirePlugins(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := invoke.FindInPath(n, DefaultBinDirs); err != nil {
			t.Skipf("needs the CNI plugin %q in %v (Debian: containernetworking-plugins)", n, DefaultBinDirs)
		}
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("needs iptables")
	}
}

// testEnv is one test's private network: names, subnet and directories.
type testEnv struct {
	tag      string
	bridge   string
	subnet   netip.Prefix
	dir      string
	confDir  string
	cfg      Config
	nsDir    string
	ipamDir  string
	cacheDir string
}

// newTestEnv picks a random tag and a random free 10.244.N.0/<bits> subnet.
func newTestEnv(t *testing.T, bits int) *testEnv {
	t.Helper()
	tag := fmt.Sprintf("%04x", rand.IntN(1<<16))
	dir := t.TempDir()
	e := &testEnv{
		tag:      tag,
		bridge:   "rcltest" + tag,
		subnet:   freeSubnet(t, bits),
		dir:      dir,
		confDir:  filepath.Join(dir, "net.d"),
		nsDir:    filepath.Join(dir, "netns"),
		ipamDir:  filepath.Join(dir, "networks"),
		cacheDir: filepath.Join(dir, "cache"),
	}
	for _, d := range []string{e.confDir, e.nsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.cfg = Config{
		ConfDir:       e.confDir,
		BinDirs:       DefaultBinDirs,
		CacheDir:      e.cacheDir,
		DefaultBridge: e.bridge,
		DefaultSubnet: e.subnet.String(),
		IPAMDataDir:   e.ipamDir,
		StateDir:      filepath.Join(dir, "state"),
	}
	// Runs last (cleanups are LIFO): the bridge outlives every pod.
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(e.bridge); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete test bridge %s: %v", e.bridge, err)
			}
		}
		e.assertNoIptablesTraces(t)
	})
	return e
}

func freeSubnet(t *testing.T, bits int) netip.Prefix {
	t.Helper()
	var used []netip.Prefix
	if routes, err := netlink.RouteList(nil, netlink.FAMILY_V4); err == nil {
		for _, r := range routes {
			if r.Dst != nil {
				if p, ok := prefixOf(r.Dst); ok {
					used = append(used, p)
				}
			}
		}
	}
	if addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4); err == nil {
		for _, a := range addrs {
			if p, ok := prefixOf(a.IPNet); ok {
				used = append(used, p.Masked())
			}
		}
	}
	for i := 0; i < 100; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(rand.IntN(256)), 0}), bits)
		free := true
		for _, u := range used {
			if u.Bits() > 0 && u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p
		}
	}
	t.Fatal("no free 10.244.N.0 subnet found")
	return netip.Prefix{}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// subnetText is how the subnet's addresses start in text ("10.244.7.").
func (e *testEnv) subnetText() string {
	s := e.subnet.Addr().String()
	return s[:strings.LastIndexByte(s, '.')+1]
}

func (e *testEnv) podID(name string) string { return "rcltest-" + e.tag + "-" + name }

func (e *testEnv) manager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newPod pins a fresh netns for a pod; cleanup tears the pod down (so a
// failing test leaves nothing) and removes the netns.
func (e *testEnv) newPod(t *testing.T, m *Manager, name string) (podID, nsPath string) {
	t.Helper()
	podID = e.podID(name)
	nsPath = filepath.Join(e.nsDir, podID)
	if err := NewNetNS(nsPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Teardown(context.Background(), podID, nsPath, nil); err != nil {
			t.Errorf("cleanup teardown %s: %v", podID, err)
		}
		if err := RemoveNetNS(nsPath); err != nil {
			t.Errorf("cleanup netns %s: %v", nsPath, err)
		}
	})
	return podID, nsPath
}

// assertNoIptablesTraces fails when any rule or chain mentions the test's
// tag, pod IDs, bridge or subnet.
func (e *testEnv) assertNoIptablesTraces(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(tool).Output()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, e.tag) || strings.Contains(l, e.subnetText()) || strings.Contains(l, e.bridge) {
				t.Errorf("%s still has: %s", tool, l)
			}
		}
	}
}

// podNet is what a pod's namespace looks like from inside.
type podNet struct {
	loUp     bool
	eth0     bool
	addrs    []netip.Prefix
	peerIdx  int // host-side ifindex of eth0's veth peer
	allLinks []string
}

func inspectPod(t *testing.T, nsPath string) podNet {
	t.Helper()
	var p podNet
	err := WithNetNS(nsPath, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			p.allLinks = append(p.allLinks, a.Name)
			switch a.Name {
			case "lo":
				p.loUp = a.Flags&net.FlagUp != 0
			case "eth0":
				p.eth0 = true
				p.peerIdx = a.ParentIndex
				addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
				if err != nil {
					return err
				}
				for _, ad := range addrs {
					if pr, ok := prefixOf(ad.IPNet); ok && !pr.Addr().IsLinkLocalUnicast() {
						p.addrs = append(p.addrs, pr)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("inspect %s: %v", nsPath, err)
	}
	return p
}

// bridgePorts lists the host links enslaved to the bridge.
func bridgePorts(t *testing.T, bridge string) []string {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports
}

func linkExists(idx int) bool {
	_, err := netlink.LinkByIndex(idx)
	return err == nil
}

// ipamFiles lists host-local's allocation files (one per allocated IP).
func ipamFiles(t *testing.T, dir, network string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, network))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// serveOnce listens on addr inside the pod namespace and answers every
// connection with msg; the listener closes at test end.
func serveInPod(t *testing.T, nsPath, addr, msg string) net.Addr {
	t.Helper()
	var ln net.Listener
	if err := WithNetNS(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", nsPath, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(msg))
			c.Close()
		}
	}()
	return ln.Addr()
}

func readAll(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	_, err = bufio.NewReader(c).WriteTo(&b)
	return b.String(), err
}

func mountinfoHas(path string) bool {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}
