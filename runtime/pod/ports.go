package pod

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/network"
)

// checkPorts refuses host ports that another pod of this runclet maps or
// that a host process listens on. portmap's DNAT rules would otherwise
// silently shadow (or be shadowed by) the other user of the port.
func (m *Manager) checkPorts(ports []network.PortMapping) error {
	pods, err := m.l.ListPods()
	if err != nil {
		return err
	}
	for _, want := range ports {
		proto := strings.ToLower(want.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		for _, p := range pods {
			if p.Inactive() {
				continue
			}
			for _, have := range p.Ports {
				hp := strings.ToLower(have.Protocol)
				if hp == "" {
					hp = "tcp"
				}
				if have.HostPort == want.HostPort && hp == proto && (have.HostIP == "" || want.HostIP == "" || have.HostIP == want.HostIP) {
					return errdefs.AlreadyExists("host port %d/%s is in use by pod %s", want.HostPort, proto, p.ID)
				}
			}
		}
		if err := probePort(proto, want.HostIP, want.HostPort); err != nil {
			return err
		}
	}
	return nil
}

// probePort binds the port for an instant to see whether a host process
// holds it.
func probePort(proto, ip string, port int32) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(int(port)))
	var err error
	switch proto {
	case "tcp":
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			l.Close()
		}
	case "udp":
		var c net.PacketConn
		if c, err = net.ListenPacket("udp", addr); err == nil {
			c.Close()
		}
	default:
		return nil // sctp: nothing cheap to probe with
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return errdefs.AlreadyExists("host port %d/%s is in use on this host", port, proto)
	}
	return nil
}
