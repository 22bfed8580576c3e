package network

import (
	"bufio"
	"net"
	"os"
	"strings"
)

// HostIPs are the node's addresses a pod in the host's network namespace
// is reached at: those of the interface holding the default route, else
// every global unicast address (IPv4 first). A fly pod that did not ask
// for the host network reports them as its IPs, as kubelet wants an IP
// for every pod outside the host network.
func HostIPs() []string {
	var ifaces []net.Interface
	if name := defaultRouteInterface(); name != "" {
		if ifc, err := net.InterfaceByName(name); err == nil {
			ifaces = []net.Interface{*ifc}
		}
	}
	if ips := globalIPs(ifaces); len(ips) > 0 {
		return ips
	}
	all, _ := net.Interfaces()
	return globalIPs(all)
}

func globalIPs(ifaces []net.Interface) []string {
	var v4, v6 []string
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok || !n.IP.IsGlobalUnicast() {
				continue
			}
			if n.IP.To4() != nil {
				v4 = append(v4, n.IP.String())
			} else {
				v6 = append(v6, n.IP.String())
			}
		}
	}
	return append(v4, v6...)
}

// defaultRouteInterface reads the IPv4 default route from /proc/net/route.
func defaultRouteInterface() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) > 7 && fl[1] == "00000000" && fl[7] == "00000000" {
			return fl[0]
		}
	}
	return ""
}
