package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/testutil"
)

// podmanConflist is /etc/cni/net.d/87-podman-bridge.conflist as Debian
// 12's podman package (4.3.1+ds1-8) ships it, kept in runtime/network's
// testdata (tests run in their package's directory).
const podmanConflist = "../runtime/network/testdata/87-podman-bridge.conflist"

// freeThird returns the first N from start (mod 250) for which no host
// address or route overlaps 10.<second>.N.0/24 now: runclet refuses a
// bridge subnet the host already has, and tests of other runclet
// instances on this machine hold random ones.
func freeThird(t testing.TB, second, start int) int {
	t.Helper()
	routes, _ := exec.Command("ip", "-o", "route", "show", "table", "all").CombinedOutput()
	addrs, _ := exec.Command("ip", "-o", "addr", "show").CombinedOutput()
	used := string(routes) + string(addrs)
	for i := 0; i < 250; i++ {
		n := (start + i) % 250
		if !strings.Contains(used, fmt.Sprintf(" 10.%d.%d.", second, n)) && !strings.Contains(used, fmt.Sprintf("10.%d.0.0/16", second)) {
			return n
		}
	}
	t.Fatalf("no free 10.%d.N.0/24", second)
	return 0
}

// The issue 19 setup through the CLI: podman's packaged conflist sits in
// conf_dir (it sorts first) and runclet's config names its built-in
// network. The pod is on runclet's bridge and reachable from the host;
// `runclet gc` removes the bridge once no pod uses it; a bridge of
// somebody else on the same subnet makes the next pod fail with both named.
func TestPodmanConflistBesideNamedNetworkAndBridgeGC(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skip("needs containernetworking-plugins in /usr/lib/cni")
	}
	b := make([]byte, 3)
	rand.Read(b)
	bridge := "rcln" + hex.EncodeToString(b)
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.219.%d.0/24", freeThird(t, 219, int(b[2])%250)))
	confDir := t.TempDir()
	conflist, err := os.ReadFile(podmanConflist)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "87-podman-bridge.conflist"), conflist, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("[network]\nconf_dir = %q\ndefault_bridge = %q\ndefault_subnet = %q\nname = \"runclet\"\n",
		confDir, bridge, subnet)
	pi := &podInstance{instance: newInstance(t, cfg), bridge: bridge, reg: testregistry.StartTB(t)}
	t.Cleanup(func() { pi.cleanupAndCheck(t) })
	podmanBridgeBefore := hostLinkExists("cni-podman0")
	img := pi.busybox()

	podID := lastLine(pi.run("run", "-d", img, "--", "sh", "-c", "while true; do echo served | nc -l -p 8080; done"))
	p := pi.status(podID)
	if p.Attachment == nil || len(p.Attachment.IPs) == 0 {
		t.Fatalf("pod has no address: %+v", p)
	}
	ip := strings.Split(p.Attachment.IPs[0], "/")[0]
	if !subnet.Contains(netip.MustParseAddr(ip)) {
		t.Fatalf("pod IP %s not in runclet's subnet %s", ip, subnet)
	}
	var got string
	for i := 0; i < 50 && got != "served\n"; i++ {
		got = dialRead(net.JoinHostPort(ip, "8080"))
		time.Sleep(100 * time.Millisecond)
	}
	if got != "served\n" {
		t.Fatalf("host to pod %s:8080: %q", ip, got)
	}
	if !podmanBridgeBefore && hostLinkExists("cni-podman0") {
		t.Fatal("podman's network was used")
	}

	out := pi.run("gc")
	if strings.Contains(out, "bridge") || !hostLinkExists(bridge) {
		t.Fatalf("gc with a running pod on %s: %s", bridge, out)
	}
	pi.run("rm", podID)
	if out := pi.run("gc"); !strings.Contains(out, "removed unused bridge "+bridge) || hostLinkExists(bridge) {
		t.Fatalf("gc after the last pod: %q; bridge still there: %v", out, hostLinkExists(bridge))
	}

	// Somebody else's bridge on runclet's subnet: refused, naming both.
	other := "rclx" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "link", "add", other, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", other).Run() })
	gwOther := subnet.Addr().Next().Next()
	if out, err := exec.Command("ip", "addr", "add", netip.PrefixFrom(gwOther, 24).String(), "dev", other).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	exec.Command("ip", "link", "set", other, "up").Run()
	_, stderr, err := pi.try("run", "--rm", img, "--", "true")
	if err == nil || !strings.Contains(stderr, `network "runclet"`) || !strings.Contains(stderr, other) ||
		!strings.Contains(stderr, subnet.String()) {
		t.Fatalf("run with %s on the subnet: %v\n%s", other, err, stderr)
	}
	if hostLinkExists(bridge) {
		t.Fatal("the refused network's bridge was created")
	}
}

func hostLinkExists(name string) bool {
	return exec.Command("ip", "link", "show", name).Run() == nil
}
