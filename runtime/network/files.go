package network

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

// The host files the per-pod files are derived from; variables so tests can
// point them elsewhere.
var (
	hostResolvConf = "/etc/resolv.conf"
	// resolvedResolvConf lists systemd-resolved's upstream servers, for
	// hosts whose /etc/resolv.conf points at the 127.0.0.53 stub.
	resolvedResolvConf = "/run/systemd/resolve/resolv.conf"
	hostHosts          = "/etc/hosts"
)

const podFilePerm = 0o644

// WriteResolvConf writes the pod's resolv.conf at path (atomically).
//
// If any of servers, searches or options (CRI DNSConfig) is given, the file
// holds exactly those. Otherwise, for a host-network pod, it is a copy of
// the host's /etc/resolv.conf as is; for a pod with its own network
// namespace it is the host's file with loopback nameservers (127.0.0.0/8,
// ::1, e.g. systemd-resolved's 127.0.0.53 stub, unreachable from the pod)
// replaced by the upstream servers of /run/systemd/resolve/resolv.conf when
// that exists, or dropped. A missing host file gives an empty resolv.conf.
func WriteResolvConf(path string, servers, searches, options []string, hostNetwork bool) error {
	var data []byte
	switch {
	case len(servers) > 0 || len(searches) > 0 || len(options) > 0:
		var b strings.Builder
		if len(searches) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
		}
		for _, s := range servers {
			if _, err := netip.ParseAddr(s); err != nil {
				return errdefs.InvalidArgument("write %s: DNS server %q is not an IP address", path, s)
			}
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
		if len(options) > 0 {
			fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
		}
		data = []byte(b.String())
	case hostNetwork:
		host, err := readOptional(hostResolvConf)
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		data = host
	default:
		host, err := readOptional(hostResolvConf)
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		data, err = podResolvConf(host)
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return fsutil.WriteFileAtomic(path, data, podFilePerm)
}

// podResolvConf rewrites a host resolv.conf for use in a pod network namespace.
func podResolvConf(host []byte) ([]byte, error) {
	var out bytes.Buffer
	replaced := false
	for _, line := range splitLines(host) {
		if ns, ok := nameserverOf(line); ok && isLoopback(ns) {
			if replaced {
				continue
			}
			replaced = true
			upstream, err := readOptional(resolvedResolvConf)
			if err != nil {
				return nil, err
			}
			for _, l := range splitLines(upstream) {
				if ns, ok := nameserverOf(l); ok && !isLoopback(ns) {
					fmt.Fprintf(&out, "nameserver %s\n", ns)
				}
			}
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

func splitLines(data []byte) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// nameserverOf returns the address of a "nameserver" line.
func nameserverOf(line string) (string, bool) {
	f := strings.Fields(line)
	if len(f) >= 2 && f[0] == "nameserver" {
		return f[1], true
	}
	return "", false
}

func isLoopback(s string) bool {
	if i := strings.IndexByte(s, '%'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.Unmap().IsLoopback()
}

func readOptional(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// WriteHosts writes the pod's /etc/hosts at path (atomically): localhost
// entries for IPv4 and IPv6, then "<ip>\t<hostname>" for each of the pod's
// addresses (ips may be plain addresses or CIDR prefixes); with no address,
// the hostname maps to 127.0.1.1 (the Debian convention) so it still
// resolves. For a host-network pod it is a copy of the host's /etc/hosts.
func WriteHosts(path, hostname string, ips []string, hostNetwork bool) error {
	if hostNetwork {
		host, err := os.ReadFile(hostHosts)
		if err == nil {
			return fsutil.WriteFileAtomic(path, host, podFilePerm)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("write %s: %w", path, err)
		}
		// No host file: fall through to a generated one.
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	if hostname != "" && !hostNetwork {
		if strings.ContainsAny(hostname, " \t\r\n#") {
			return errdefs.InvalidArgument("write %s: invalid hostname %q", path, hostname)
		}
		n := 0
		for _, s := range ips {
			a, err := parseAddrOrPrefix(s)
			if err != nil {
				return errdefs.InvalidArgument("write %s: pod IP %q: %w", path, s, err)
			}
			fmt.Fprintf(&b, "%s\t%s\n", a, hostname)
			n++
		}
		if n == 0 {
			fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
		}
	}
	return fsutil.WriteFileAtomic(path, []byte(b.String()), podFilePerm)
}

func parseAddrOrPrefix(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	return a.Unmap(), nil
}

// WriteHostname writes the pod's /etc/hostname at path (atomically):
// the hostname and a newline.
func WriteHostname(path, hostname string) error {
	if hostname == "" || len(hostname) > 64 || strings.ContainsAny(hostname, " \t\r\n/") {
		return errdefs.InvalidArgument("write %s: invalid hostname %q (1 to 64 characters, no spaces or '/')", path, hostname)
	}
	return fsutil.WriteFileAtomic(path, []byte(hostname+"\n"), podFilePerm)
}
