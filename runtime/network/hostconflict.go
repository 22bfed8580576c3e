package network

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/runclet/runclet/internal/errdefs"
)

// hostNet is an address or a route of the host's network namespace.
type hostNet struct {
	prefix netip.Prefix
	iface  string // interface name ("" when the route has none)
	route  bool   // a route of the main table, else an interface address
}

func (h hostNet) String() string {
	if h.route {
		if h.iface == "" {
			return "route " + h.prefix.String()
		}
		return fmt.Sprintf("route %s dev %s", h.prefix, h.iface)
	}
	return fmt.Sprintf("address %s of interface %s", h.prefix, h.iface)
}

// hostNets lists the host's interface addresses and the destinations of
// its main routing table, IPv4 and IPv6, without default routes, IPv6
// link-local and multicast prefixes (every interface has those).
func hostNets() ([]hostNet, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host interfaces: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []hostNet
	add := func(n *net.IPNet, idx int, route bool) {
		if n == nil {
			return
		}
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			return
		}
		a = a.Unmap()
		ones, _ := n.Mask.Size()
		p := netip.PrefixFrom(a, ones)
		if ones == 0 || a.IsLinkLocalUnicast() && a.Is6() || a.IsMulticast() {
			return
		}
		out = append(out, hostNet{prefix: p, iface: names[idx], route: route})
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		add(a.IPNet, a.LinkIndex, false)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		add(r.Dst, r.LinkIndex, true)
	}
	return out, nil
}

// overlapping returns the entries of nets that overlap subnet, leaving out
// those on the interface ownIface (the network's own bridge).
func overlapping(subnet netip.Prefix, nets []hostNet, ownIface string) []hostNet {
	var out []hostNet
	for _, h := range nets {
		if h.iface != "" && h.iface == ownIface {
			continue
		}
		if h.prefix.Addr().Is4() == subnet.Addr().Is4() && h.prefix.Overlaps(subnet) {
			out = append(out, h)
		}
	}
	return out
}

// describe names up to three conflicts, addresses first.
func describe(conflicts []hostNet) string {
	var parts []string
	seen := map[string]bool{}
	for _, wantRoute := range []bool{false, true} {
		for _, c := range conflicts {
			if c.route != wantRoute || seen[c.String()] || len(parts) == 3 {
				continue
			}
			seen[c.String()] = true
			parts = append(parts, c.String())
		}
	}
	if more := len(conflicts) - len(parts); more > 0 && len(parts) == 3 {
		parts = append(parts, fmt.Sprintf("and %d more", more))
	}
	return strings.Join(parts, ", ")
}

// bridgeSubnets returns the bridge and the subnets of a network's bridge
// plugin (with an IPAM that names its subnets: host-local's "subnet" or
// "ranges"). ok is false for networks without one: ptp, macvlan, ipvlan or
// add-ons such as Calico put host routes or addresses inside their own
// subnet by design, and add-ons that delegate (flannel) name no subnet.
func bridgeSubnets(list *libcni.NetworkConfigList) (bridge string, subnets []netip.Prefix, ok bool) {
	var raw struct {
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPAM   struct {
				Subnet string `json:"subnet"`
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return "", nil, false
	}
	for _, p := range raw.Plugins {
		if p.Type != "bridge" {
			continue
		}
		bridge = p.Bridge
		if bridge == "" {
			bridge = "cni0" // the bridge plugin's default
		}
		texts := []string{p.IPAM.Subnet}
		for _, set := range p.IPAM.Ranges {
			for _, r := range set {
				texts = append(texts, r.Subnet)
			}
		}
		for _, s := range texts {
			if pfx, err := netip.ParsePrefix(s); err == nil {
				subnets = append(subnets, pfx.Masked())
			}
		}
		return bridge, subnets, len(subnets) > 0
	}
	return "", nil, false
}

// checkHostOverlap refuses a bridge network whose subnet overlaps an
// address or a route already on the host, other than its own bridge's:
// the host would route the pods' traffic elsewhere (or the other network's
// to the pods) and the pods would be unreachable.
func (m *Manager) checkHostOverlap(nc *netConfig, list *libcni.NetworkConfigList) error {
	bridge, subnets, ok := bridgeSubnets(list)
	if !ok {
		return nil
	}
	nets, err := hostNets()
	if err != nil {
		return err
	}
	for _, s := range subnets {
		c := overlapping(s, nets, bridge)
		if len(c) == 0 {
			continue
		}
		hint := "remove the other network or give one of them another subnet"
		switch {
		case nc.builtin() && m.cfg.DefaultSubnet == AutoSubnet:
			hint = "runclet picked this subnet when it was free and keeps it while pods hold addresses in it; " +
				"remove the other network, or the pods on runclet's network and a free subnet is picked for the next one"
		case nc.builtin():
			hint = fmt.Sprintf("set network.default_subnet to a free subnet, or to %q to have one picked", AutoSubnet)
		case !nc.builtin() && c[0].iface == m.cfg.DefaultBridge:
			hint = fmt.Sprintf("%s is runclet's built-in bridge: `runclet gc` removes it when no pod uses it; "+
				"or choose the network with network.name", m.cfg.DefaultBridge)
		case !nc.builtin():
			hint += ", or choose another network with network.name"
		}
		return errdefs.FailedPrecondition("network %q (%s, bridge %s): subnet %s overlaps the host's %s; "+
			"pods on it would be unreachable from the host: %s",
			nc.name, nc.source, bridge, s, describe(c), hint)
	}
	return nil
}
