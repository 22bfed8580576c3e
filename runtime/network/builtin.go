package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
)

// Files in Config.StateDir.
const (
	builtinRecordFile = "builtin-network.json" // the auto subnet chosen
	choiceRecordFile  = "network.json"         // the network pods were last attached to
	builtinLockFile   = "builtin-network.lock" // Setup (shared) vs bridge removal (exclusive)
)

// AutoSubnetCandidates are the subnets "auto" tries, in order: 10.88.0.0/16
// (rkt's and podman's default) to 10.95.0.0/16, then 10.112.0.0/16 to
// 10.127.0.0/16, then 172.28.0.0/16 to 172.31.0.0/16. Kubernetes' default
// service range (10.96.0.0/12), flannel's and k3s's pod ranges (10.244/16,
// 10.42/16) and Docker's default bridge (172.17/16) are not among them.
func AutoSubnetCandidates() []netip.Prefix {
	var out []netip.Prefix
	add := func(a, from, to byte) {
		for b := int(from); b <= int(to); b++ {
			out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{a, byte(b), 0, 0}), 16))
		}
	}
	add(10, 88, 95)
	add(10, 112, 127)
	add(172, 28, 31)
	return out
}

// builtinRecord is the built-in network's subnet as chosen by "auto".
type builtinRecord struct {
	Subnet netip.Prefix `json:"subnet"`
	Bridge string       `json:"bridge"`
}

// listFor returns nc's config list, resolving the built-in network's
// auto subnet on first use.
func (m *Manager) listFor(nc *netConfig) (*libcni.NetworkConfigList, error) {
	if nc.err != nil {
		return nil, nc.err
	}
	if nc.list != nil {
		return nc.list, nil
	}
	return m.builtinList()
}

// builtinList is the built-in network's config. With an "auto" subnet the
// subnet is read from StateDir or, the first time, picked and recorded.
func (m *Manager) builtinList() (*libcni.NetworkConfigList, error) {
	m.bmu.Lock()
	defer m.bmu.Unlock()
	if m.builtin != nil {
		return m.builtin, nil
	}
	subnet, err := m.autoSubnet()
	if err != nil {
		return nil, err
	}
	list, err := builtinConfList(m.cfg, subnet)
	if err != nil {
		return nil, err
	}
	m.builtin = list
	return list, nil
}

// BuiltinSubnet is the built-in network's subnet, resolving "auto" (which
// may pick and record one).
func (m *Manager) BuiltinSubnet() (netip.Prefix, error) {
	list, err := m.builtinList()
	if err != nil {
		return netip.Prefix{}, err
	}
	_, subnets, _ := bridgeSubnets(list)
	return subnets[0], nil
}

// autoSubnet reads the recorded subnet and keeps it while it is free (or
// in use by pods); otherwise it picks the first free candidate, records it
// and logs the choice. Free means overlapping no address or route of the
// host other than the built-in bridge's own.
func (m *Manager) autoSubnet() (netip.Prefix, error) {
	nets, err := hostNets()
	if err != nil {
		return netip.Prefix{}, err
	}
	path := filepath.Join(m.cfg.StateDir, builtinRecordFile)
	var rec builtinRecord
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &rec); err != nil || !rec.Subnet.IsValid() {
			slog.Warn("ignoring unreadable record of the built-in network's subnet", "file", path, "err", err)
			rec = builtinRecord{}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return netip.Prefix{}, fmt.Errorf("built-in network: %w", err)
	}
	if rec.Subnet.IsValid() {
		c := overlapping(rec.Subnet, nets, m.cfg.DefaultBridge)
		if len(c) == 0 || m.builtinAllocations() > 0 {
			// Stable across restarts; if taken meanwhile while pods still
			// hold addresses in it, Setup refuses and names the conflict.
			return rec.Subnet, nil
		}
		slog.Warn("the built-in network's recorded subnet is now used on the host, picking another",
			"subnet", rec.Subnet, "conflict", describe(c), "file", path)
	}
	for _, cand := range m.cfg.candidates {
		if len(overlapping(cand, nets, m.cfg.DefaultBridge)) > 0 {
			continue
		}
		data, _ := json.Marshal(builtinRecord{Subnet: cand, Bridge: m.cfg.DefaultBridge})
		if err := os.MkdirAll(m.cfg.StateDir, 0o700); err != nil {
			return netip.Prefix{}, fmt.Errorf("built-in network: %w", err)
		}
		if err := fsutil.WriteFileAtomic(path, append(data, '\n'), 0o644); err != nil {
			return netip.Prefix{}, fmt.Errorf("built-in network: record subnet: %w", err)
		}
		slog.Info("built-in network: picked a free subnet", "subnet", cand, "bridge", m.cfg.DefaultBridge, "file", path)
		return cand, nil
	}
	var list []string
	for _, c := range m.cfg.candidates {
		list = append(list, c.String())
	}
	return netip.Prefix{}, errdefs.FailedPrecondition("built-in network: no free subnet among %s (all overlap addresses or routes of the host); set network.default_subnet to a free one",
		strings.Join(list, ", "))
}

// builtinAllocations counts the addresses host-local holds in the built-in
// network (one file per address, named after it).
func (m *Manager) builtinAllocations() int {
	ents, err := os.ReadDir(filepath.Join(m.cfg.IPAMDataDir, DefaultNetworkName))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			n++
		}
	}
	return n
}

// lockBuiltin takes the built-in network's lock: shared while a pod is
// being attached to it, exclusive while its bridge is removed, so that a
// Setup in another runclet process never sees its bridge vanish midway.
func (m *Manager) lockBuiltin(shared bool) (*fsutil.Lock, error) {
	if err := os.MkdirAll(m.cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	return fsutil.LockFile(filepath.Join(m.cfg.StateDir, builtinLockFile), shared)
}

// recordChoice compares the network a pod is being attached to with the
// one recorded last time (by any runclet process using this StateDir),
// warns when it changed and records the new one. The file is read once per
// choice, not at every Setup.
func (m *Manager) recordChoice(nc *netConfig) {
	key := nc.name + "\x00" + nc.source
	m.mu.Lock()
	done := m.recorded == key
	m.mu.Unlock()
	if done {
		return
	}
	type choice struct {
		Name   string `json:"name"`
		Source string `json:"source"`
	}
	path := filepath.Join(m.cfg.StateDir, choiceRecordFile)
	var last choice
	if data, err := os.ReadFile(path); err == nil {
		json.Unmarshal(data, &last)
	}
	if last.Name != nc.name || last.Source != nc.source {
		if last.Name != "" {
			slog.Warn("the CNI network pods attach to changed since it was last used: new pods go to the new network",
				"network", nc.name, "source", nc.source, "previous", last.Name, "previous_source", last.Source,
				"hint", "set network.name in runclet's config to choose the network explicitly")
		}
		data, _ := json.Marshal(choice{Name: nc.name, Source: nc.source})
		if err := os.MkdirAll(m.cfg.StateDir, 0o700); err == nil {
			err = fsutil.WriteFileAtomic(path, append(data, '\n'), 0o644)
		}
	}
	m.mu.Lock()
	m.recorded = key
	m.mu.Unlock()
}

// RemoveUnusedBridge deletes the built-in network's bridge (DefaultBridge)
// when nothing uses it: no interface is attached to it and host-local holds
// no address in the built-in network. It returns the bridge's name when it
// removed it, "" when there was none or it is in use. A link of that name
// that is not a bridge is left alone. Pods being attached to the built-in
// network at the same time (in any runclet process) wait for it.
func (m *Manager) RemoveUnusedBridge(ctx context.Context) (string, error) {
	lock, err := m.lockBuiltin(false)
	if err != nil {
		return "", fmt.Errorf("remove built-in bridge: %w", err)
	}
	defer lock.Unlock()
	removed, _, err := m.removeUnusedBridgeLocked(ctx)
	return removed, err
}

// removeUnusedBridgeLocked is RemoveUnusedBridge under the exclusive lock;
// inUse says the bridge exists and is used.
func (m *Manager) removeUnusedBridgeLocked(ctx context.Context) (removed string, inUse bool, err error) {
	name := m.cfg.DefaultBridge
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("remove built-in bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return "", true, nil
	}
	if n := m.builtinAllocations(); n > 0 {
		slog.DebugContext(ctx, "built-in bridge in use", "bridge", name, "addresses", n)
		return "", true, nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return "", false, fmt.Errorf("remove built-in bridge %s: %w", name, err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == link.Attrs().Index {
			slog.DebugContext(ctx, "built-in bridge in use", "bridge", name, "port", l.Attrs().Name)
			return "", true, nil
		}
	}
	if err := netlink.LinkDel(link); err != nil {
		return "", false, fmt.Errorf("remove built-in bridge %s: %w", name, err)
	}
	slog.InfoContext(ctx, "removed the unused built-in bridge", "bridge", name)
	return name, false, nil
}

// repickAutoSubnet is for Setup in a long-running process: when the
// built-in network's auto subnet was taken on the host since it was picked
// (say podman's bridge came up on it) and no pod is on it, it removes the
// unused bridge and picks another subnet, as a restart would, instead of
// refusing every pod until then. Otherwise it returns list unchanged and
// Setup's overlap check names the conflict.
func (m *Manager) repickAutoSubnet(ctx context.Context, nc *netConfig, list *libcni.NetworkConfigList) (*libcni.NetworkConfigList, error) {
	if !nc.builtin() || m.cfg.DefaultSubnet != AutoSubnet || m.checkHostOverlap(nc, list) == nil {
		return list, nil
	}
	lock, err := m.lockBuiltin(false)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if m.builtinAllocations() > 0 {
		return list, nil
	}
	if _, inUse, err := m.removeUnusedBridgeLocked(ctx); err != nil || inUse {
		return list, err
	}
	m.bmu.Lock()
	if m.builtin == list {
		m.builtin = nil
	}
	m.bmu.Unlock()
	return m.builtinList()
}
