package main

import (
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// The cluster's addresses. The host end of the bridge is where the control
// plane, CoreDNS and the image registry listen; node i (from 1) is
// 10.240.0.(10+i) in a network namespace of its own, with pod CIDR
// 10.241.i.0/24; Services get 10.242.0.0/24.
const (
	hostBridge  = "rclk8s0"
	hostIP      = "10.240.0.1"
	nodeCIDR    = "10.240.0.0/24"
	clusterCIDR = "10.241.0.0/16"
	serviceCIDR = "10.242.0.0/24"
	apiServerIP = "10.242.0.1" // the kubernetes Service
	dnsIP       = "10.242.0.10"
	nsPrefix    = "rclk8s-n"
)

// node is one Kubernetes node: a network namespace and what runs in it.
type nodeNet struct {
	index  int
	name   string // the node's name and its netns's name
	ip     string
	podNet string // 10.241.i.0/24
	podGW  string // 10.241.i.1
	veth   string // host side
}

func newNodeNet(i int) nodeNet {
	return nodeNet{index: i, name: fmt.Sprintf("%s%d", nsPrefix, i), ip: fmt.Sprintf("10.240.0.%d", 10+i),
		podNet: fmt.Sprintf("10.241.%d.0/24", i), podGW: fmt.Sprintf("10.241.%d.1", i), veth: fmt.Sprintf("rclk8s-v%d", i)}
}

func (n nodeNet) netnsPath() string { return "/run/netns/" + n.name }

// inNetns prefixes a command so it runs in the node's network namespace
// only (nsenter --net): unlike `ip netns exec` it keeps the host's mount
// namespace, which kubelet, the runtime and kube-proxy must share.
func (n nodeNet) inNetns(bin string, args ...string) (string, []string) {
	return "nsenter", append([]string{"--net=" + n.netnsPath(), "--", bin}, args...)
}

// network is what the cluster made on the host's network: the bridge,
// the nodes' namespaces and veths, routes and iptables rules.
type network struct {
	nodes    []nodeNet
	iptables [][]string // rules added, as `iptables -A` arguments without -A
	netns    []string
	links    []string
	// madeNetnsDir: /run/netns did not exist before; `ip netns add` made
	// it and bind-mounted it onto itself, which teardown undoes.
	madeNetnsDir bool
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkFree refuses to start when the cluster's names or addresses are in
// use (another run, or a network that overlaps).
func checkFree(n int) error {
	if _, err := os.Stat("/sys/class/net/" + hostBridge); err == nil {
		return fmt.Errorf("link %s exists: another cluster may be up (tear it down, or ip link del %s)", hostBridge, hostBridge)
	}
	for i := 1; i <= n; i++ {
		nn := newNodeNet(i)
		if _, err := os.Stat(nn.netnsPath()); err == nil {
			return fmt.Errorf("network namespace %s exists: another cluster may be up (ip netns del %s)", nn.name, nn.name)
		}
	}
	out, err := exec.Command("ip", "-4", "route", "show").Output()
	if err != nil {
		return err
	}
	_, mine1, _ := net.ParseCIDR("10.240.0.0/14")
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] == "default" {
			continue
		}
		ip, sub, err := net.ParseCIDR(f[0])
		if err != nil {
			if ip = net.ParseIP(f[0]); ip == nil {
				continue
			}
			sub = &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}
		}
		if mine1.Contains(sub.IP) || sub.Contains(mine1.IP) {
			return fmt.Errorf("host route %q overlaps the cluster's 10.240.0.0/14", strings.TrimSpace(l))
		}
	}
	return nil
}

// setupNetwork makes the bridge with the host's address, and for each
// node a netns, a veth pair (eth0 inside, with the node's IP), a default
// route to the host and routes to the other nodes' pod CIDRs; the host
// routes each pod CIDR to its node. Forwarding across the bridge is
// accepted in the host's FORWARD chain (bridged frames go through it when
// br_netfilter is on).
func setupNetwork(count int) (*network, error) {
	nw := &network{}
	if _, err := os.Stat("/run/netns"); err != nil {
		nw.madeNetnsDir = true
	}
	fail := func(err error) (*network, error) { nw.teardown(); return nil, err }
	if err := sh("ip", "link", "add", hostBridge, "type", "bridge"); err != nil {
		return fail(err)
	}
	nw.links = append(nw.links, hostBridge)
	if err := sh("ip", "addr", "add", hostIP+"/24", "dev", hostBridge); err != nil {
		return fail(err)
	}
	if err := sh("ip", "link", "set", hostBridge, "up"); err != nil {
		return fail(err)
	}
	for _, rule := range [][]string{{"FORWARD", "-i", hostBridge, "-j", "ACCEPT"}, {"FORWARD", "-o", hostBridge, "-j", "ACCEPT"}} {
		if err := sh(append([]string{"iptables", "-w", "-I"}, rule...)...); err != nil {
			return fail(err)
		}
		nw.iptables = append(nw.iptables, rule)
	}
	for i := 1; i <= count; i++ {
		nw.nodes = append(nw.nodes, newNodeNet(i))
	}
	for _, n := range nw.nodes {
		if err := sh("ip", "netns", "add", n.name); err != nil {
			return fail(err)
		}
		nw.netns = append(nw.netns, n.name)
		if err := sh("ip", "link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", n.name); err != nil {
			return fail(err)
		}
		nw.links = append(nw.links, n.veth)
		in := func(args ...string) error { return sh(append([]string{"ip", "netns", "exec", n.name}, args...)...) }
		for _, c := range [][]string{
			{"ip", "link", "set", n.veth, "master", hostBridge, "up"},
		} {
			if err := sh(c...); err != nil {
				return fail(err)
			}
		}
		for _, c := range [][]string{
			{"ip", "link", "set", "lo", "up"},
			{"ip", "addr", "add", n.ip + "/24", "dev", "eth0"},
			{"ip", "link", "set", "eth0", "up"},
			{"ip", "route", "add", "default", "via", hostIP},
			{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		} {
			if err := in(c...); err != nil {
				return fail(err)
			}
		}
		for _, o := range nw.nodes {
			if o.index != n.index {
				if err := in("ip", "route", "add", o.podNet, "via", o.ip); err != nil {
					return fail(err)
				}
			}
		}
		if err := sh("ip", "route", "add", n.podNet, "via", n.ip); err != nil {
			return fail(err)
		}
	}
	return nw, nil
}

// teardown removes what setupNetwork made (routes go with the links).
func (nw *network) teardown() {
	for _, r := range nw.iptables {
		if err := sh(append([]string{"iptables", "-w", "-D"}, r...)...); err != nil {
			log.Print(err)
		}
	}
	nw.iptables = nil
	for _, ns := range nw.netns {
		if err := sh("ip", "netns", "del", ns); err != nil {
			log.Print(err)
		}
	}
	nw.netns = nil
	if nw.madeNetnsDir {
		if ents, err := os.ReadDir("/run/netns"); err == nil && len(ents) == 0 {
			unix.Unmount("/run/netns", unix.MNT_DETACH)
			os.Remove("/run/netns")
		}
	}
	for i := len(nw.links) - 1; i >= 0; i-- {
		if _, err := os.Stat("/sys/class/net/" + nw.links[i]); err == nil {
			if err := sh("ip", "link", "del", nw.links[i]); err != nil {
				log.Print(err)
			}
		}
	}
	nw.links = nil
}
