package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/runclet/runclet/internal/errdefs"
)

// PortMapping is a CRI-style host port mapping, handed to the portmap
// plugin through the "portMappings" capability.
type PortMapping struct {
	// Protocol is tcp, udp or sctp (any case); empty means tcp.
	Protocol string `json:"protocol,omitempty"`
	// ContainerPort is the port inside the pod.
	ContainerPort int32 `json:"containerPort"`
	// HostPort is the port on the host; mappings with HostPort <= 0 are
	// ignored (CRI uses 0 for "declared but not published").
	HostPort int32 `json:"hostPort"`
	// HostIP restricts the mapping to one host address; empty means all.
	HostIP string `json:"hostIP,omitempty"`
}

// DNS is the DNS configuration a plugin returned, if any.
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Domain      string   `json:"domain,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Attachment is what Setup did. The caller stores it in pod state (it is
// JSON-serializable) to report the pod's addresses; Teardown itself needs
// only the pod ID, because libcni's cache under Config.CacheDir keeps the
// config and result of every attachment.
type Attachment struct {
	// Network is the CNI network name.
	Network string `json:"network"`
	// IfName is the pod's interface in its namespace ("eth0").
	IfName string `json:"ifName"`
	// MAC is the hardware address of IfName, when the plugin reported it.
	MAC string `json:"mac,omitempty"`
	// IPs are the pod's addresses with their prefix length, IPv4 first.
	IPs []netip.Prefix `json:"ips,omitempty"`
	// Gateway is the default gateway of the first address, if any
	// (for the bridge network: the bridge's address).
	Gateway netip.Addr `json:"gateway,omitzero"`
	// DNS is set when the plugin returned DNS settings.
	DNS *DNS `json:"dns,omitempty"`
}

// PodIPs returns the pod's addresses without prefix length, IPv4 first,
// as CRI's PodSandboxStatus wants them (IP, then AdditionalIPs).
func (a *Attachment) PodIPs() []string {
	out := make([]string, 0, len(a.IPs))
	for _, p := range a.IPs {
		out = append(out, p.Addr().String())
	}
	return out
}

// SetupOption adjusts one Setup call.
type SetupOption func(*setupOptions)

type setupOptions struct {
	args [][2]string
}

// WithKubernetesPod passes the Kubernetes identity of the pod to the
// plugins as CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME,
// K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID, with IgnoreUnknown=1), as
// containerd and CRI-O do; network add-ons such as Calico and Cilium need
// them. Teardown reuses the arguments recorded at Setup.
func WithKubernetesPod(namespace, name, uid string) SetupOption {
	return func(o *setupOptions) {
		o.args = append(o.args,
			[2]string{"K8S_POD_NAMESPACE", namespace},
			[2]string{"K8S_POD_NAME", name},
			[2]string{"K8S_POD_UID", uid})
	}
}

var validPodID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// Setup attaches the network namespace pinned at netnsPath to the pod
// network: first the loopback plugin (lo up), then the network's plugin
// list (bridge, ptp, ... per config) on PodIfName, with the pod's port
// mappings passed to portmap as the "portMappings" capability. podID is the
// CNI container ID. On failure Setup undoes what it did (CNI DEL of both
// attachments) before returning the error.
func (m *Manager) Setup(ctx context.Context, podID, netnsPath string, ports []PortMapping, opts ...SetupOption) (_ *Attachment, retErr error) {
	if !validPodID.MatchString(podID) {
		return nil, errdefs.InvalidArgument("network setup: invalid pod ID %q (CNI container IDs are [a-zA-Z0-9][a-zA-Z0-9_.-]*)", podID)
	}
	if !isNetNSPath(netnsPath) {
		return nil, errdefs.FailedPrecondition("network setup of pod %s: %q is not a network namespace file", podID, netnsPath)
	}
	var o setupOptions
	for _, opt := range opts {
		opt(&o)
	}
	// libcni joins the arguments as "K=V;K=V": a ';' or '=' in a value
	// would smuggle in arguments of its own (IP=, MAC=).
	for _, kv := range o.args {
		if strings.ContainsAny(kv[0], ";=") || strings.ContainsAny(kv[1], ";=") || kv[0] == "" {
			return nil, errdefs.InvalidArgument("network setup of pod %s: CNI argument %q=%q must not contain ';' or '='", podID, kv[0], kv[1])
		}
	}
	nc := m.current()
	if err := m.checkPlugins(nc); err != nil {
		return nil, fmt.Errorf("network setup of pod %s: %w", podID, err)
	}
	list, err := m.listFor(nc)
	if err == nil {
		list, err = m.repickAutoSubnet(ctx, nc, list)
	}
	if err != nil {
		return nil, fmt.Errorf("network setup of pod %s: %w", podID, err)
	}
	if nc.builtin() {
		// `runclet gc` does not remove the bridge while a pod joins it.
		lock, err := m.lockBuiltin(true)
		if err != nil {
			return nil, fmt.Errorf("network setup of pod %s: %w", podID, err)
		}
		defer lock.Unlock()
	}
	if err := m.checkHostOverlap(nc, list); err != nil {
		return nil, fmt.Errorf("network setup of pod %s: %w", podID, err)
	}
	if existing, err := m.cachedAttachments(podID); err == nil {
		for _, a := range existing {
			if a.IfName == PodIfName {
				return nil, errdefs.AlreadyExists("network setup of pod %s: already attached to network %q (tear it down first)", podID, a.Network)
			}
		}
	}

	rt := &libcni.RuntimeConf{ContainerID: podID, NetNS: netnsPath, IfName: PodIfName}
	if len(o.args) > 0 {
		rt.Args = append([][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_INFRA_CONTAINER_ID", podID}}, o.args...)
	}
	if pm := portMappingsArg(ports); len(pm) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": pm}
	} else if trimmed, err := withoutCapabilityOnly(list, "portMappings"); err == nil {
		// A pod without host ports skips portmap (about 15 ms each way);
		// libcni caches the list used, so teardown matches it.
		list = trimmed
	}

	// Rollback runs even when ctx was canceled, with its own deadline.
	rollback := func(lists []*libcni.NetworkConfigList, rts []*libcni.RuntimeConf) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		for i := len(lists) - 1; i >= 0; i-- {
			if err := m.cni.DelNetworkList(dctx, lists[i], rts[i]); err != nil {
				slog.WarnContext(ctx, "network setup rollback failed", "pod", podID, "network", lists[i].Name, "err", err)
			}
		}
	}

	// lo is brought up in-process: the loopback plugin does only that and
	// costs a plugin exec (about 17 ms) on each of setup and teardown.
	if err := setLoopback(netnsPath, true); err != nil {
		return nil, fmt.Errorf("network setup of pod %s: loopback: %w", podID, err)
	}
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		rollback([]*libcni.NetworkConfigList{list}, []*libcni.RuntimeConf{rt})
		setLoopback(netnsPath, false)
		return nil, classify(fmt.Errorf("network setup of pod %s: network %q (%s): %w", podID, list.Name, nc.source, err))
	}
	att, err := attachmentFromResult(list.Name, res)
	if err != nil {
		rollback([]*libcni.NetworkConfigList{list}, []*libcni.RuntimeConf{rt})
		setLoopback(netnsPath, false)
		return nil, fmt.Errorf("network setup of pod %s: network %q: %w", podID, list.Name, err)
	}
	m.recordChoice(nc)
	slog.DebugContext(ctx, "pod attached to network", "pod", podID, "network", att.Network, "ips", att.PodIPs())
	return att, nil
}

// withoutCapabilityOnly returns list minus the plugins whose only purpose
// is the named capability (portmap for "portMappings"), or list itself
// when there are none.
func withoutCapabilityOnly(list *libcni.NetworkConfigList, capability string) (*libcni.NetworkConfigList, error) {
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return nil, err
	}
	plugins, _ := raw["plugins"].([]any)
	var kept []any
	for _, p := range plugins {
		pm, _ := p.(map[string]any)
		caps, _ := pm["capabilities"].(map[string]any)
		if pm["type"] == "portmap" && len(caps) == 1 && caps[capability] == true {
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == len(plugins) || len(kept) == 0 {
		return list, nil
	}
	raw["plugins"] = kept
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}

// setLoopback sets lo up or down inside the pod's network namespace.
func setLoopback(netnsPath string, up bool) error {
	return WithNetNS(netnsPath, func() error {
		lo, err := netlink.LinkByName(loopbackIfName)
		if err != nil {
			return err
		}
		if up {
			return netlink.LinkSetUp(lo)
		}
		return netlink.LinkSetDown(lo)
	})
}

// classify gives plugin errors an error class where one fits.
func classify(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "failed to find plugin"):
		return errdefs.FailedPrecondition("%w", err)
	}
	return err
}

func portMappingsArg(ports []PortMapping) []map[string]any {
	var out []map[string]any
	for _, p := range ports {
		if p.HostPort <= 0 || p.ContainerPort <= 0 {
			continue
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		m := map[string]any{
			"hostPort":      p.HostPort,
			"containerPort": p.ContainerPort,
			"protocol":      proto,
		}
		if p.HostIP != "" {
			m["hostIP"] = p.HostIP
		}
		out = append(out, m)
	}
	return out
}

// attachmentFromResult extracts the pod's side of a CNI result.
func attachmentFromResult(network string, res cnitypes.Result) (*Attachment, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("convert plugin result: %w", err)
	}
	att := &Attachment{Network: network, IfName: PodIfName}
	podIf := -1
	for i, itf := range r.Interfaces {
		if itf != nil && itf.Sandbox != "" && (itf.Name == PodIfName || podIf < 0) {
			podIf = i
			att.MAC = itf.Mac
		}
	}
	var v4, v6 []netip.Prefix
	var gw4, gw6 netip.Addr
	for _, ipc := range r.IPs {
		if ipc == nil {
			continue
		}
		if ipc.Interface != nil && podIf >= 0 && *ipc.Interface != podIf {
			continue
		}
		addr, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		addr = addr.Unmap()
		ones, _ := ipc.Address.Mask.Size()
		p := netip.PrefixFrom(addr, ones)
		gw, _ := netip.AddrFromSlice(ipc.Gateway)
		gw = gw.Unmap()
		if addr.Is4() {
			v4 = append(v4, p)
			if !gw4.IsValid() {
				gw4 = gw
			}
		} else {
			v6 = append(v6, p)
			if !gw6.IsValid() {
				gw6 = gw
			}
		}
	}
	att.IPs = append(v4, v6...)
	if gw4.IsValid() {
		att.Gateway = gw4
	} else {
		att.Gateway = gw6
	}
	if !r.DNS.IsEmpty() {
		att.DNS = &DNS{Nameservers: r.DNS.Nameservers, Domain: r.DNS.Domain, Search: r.DNS.Search, Options: r.DNS.Options}
	}
	return att, nil
}

func (m *Manager) cachedAttachments(podID string) ([]*libcni.NetworkAttachment, error) {
	return m.cni.GetCachedAttachments(podID)
}

// Teardown detaches the pod from the network: CNI DEL of the network (then
// of loopback), which removes the pod's interface, releases its addresses
// and removes its portmap and masquerade rules. It is idempotent: calling
// it twice, or for a pod whose namespace file is already gone, succeeds
// and still releases the addresses and port mappings (the DEL then runs
// with an empty netns path, as the CNI spec allows).
//
// Each attachment is deleted with the config and port mappings recorded
// in the libcni cache at Setup, so a config change or a daemon restart in
// between does not matter; ports is used only when nothing was cached (or
// to override the cached mappings when non-empty).
func (m *Manager) Teardown(ctx context.Context, podID, netnsPath string, ports []PortMapping) error {
	if !validPodID.MatchString(podID) {
		return errdefs.InvalidArgument("network teardown: invalid pod ID %q", podID)
	}
	nsPath := netnsPath
	if nsPath != "" && !isNetNSPath(nsPath) {
		nsPath = "" // gone or no longer mounted: DEL without a namespace
	}
	pm := portMappingsArg(ports)
	nc := m.current()
	cur, curErr := m.listFor(nc)

	type del struct {
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
	}
	// The pod's network before loopback: the reverse of Setup.
	var mains, los []del
	cached, err := m.cachedAttachments(podID)
	if err != nil {
		slog.WarnContext(ctx, "cannot read CNI cache, tearing down with the current config", "pod", podID, "err", err)
	}
	for _, a := range cached {
		list, err := libcni.ConfListFromBytes(a.Config)
		if err != nil || len(list.Plugins) == 0 {
			switch {
			case a.Network == nc.name && cur != nil:
				list = cur
			case a.Network == m.loopback.Name:
				list = m.loopback
			default:
				slog.WarnContext(ctx, "unusable cached CNI config, skipping attachment", "pod", podID, "network", a.Network, "err", err)
				continue
			}
		}
		rt := &libcni.RuntimeConf{ContainerID: podID, NetNS: nsPath, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		if a.IfName == loopbackIfName {
			los = append(los, del{list, rt})
			continue
		}
		if len(pm) > 0 {
			rt.CapabilityArgs = withPortMappings(rt.CapabilityArgs, pm)
		}
		mains = append(mains, del{list, rt})
	}
	if len(mains) == 0 && cur != nil {
		rt := &libcni.RuntimeConf{ContainerID: podID, NetNS: nsPath, IfName: PodIfName}
		if len(pm) > 0 {
			rt.CapabilityArgs = map[string]any{"portMappings": pm}
		}
		mains = append(mains, del{cur, rt})
	} else if len(mains) == 0 {
		slog.WarnContext(ctx, "nothing cached for the pod and no usable current network: no CNI DEL", "pod", podID, "err", curErr)
	}
	// Loopback attachments are cached only for pods set up by runclets
	// that still ran the loopback plugin; otherwise lo is set down here,
	// in-process, undoing Setup.
	if len(los) == 0 && nsPath != "" {
		setLoopback(nsPath, false)
	}
	dels := append(mains, los...)

	var errs []error
	for _, d := range dels {
		if err := m.cni.DelNetworkList(ctx, d.list, d.rt); err != nil {
			errs = append(errs, fmt.Errorf("network %q on %s: %w", d.list.Name, d.rt.IfName, err))
			continue
		}
		if nsPath == "" && d.rt.IfName != loopbackIfName {
			// Without the namespace the bridge and ptp plugins cannot learn
			// the pod's addresses and leave their masquerade rules behind.
			if err := removeMasqRules(ctx, d.list.Name, podID); err != nil {
				errs = append(errs, fmt.Errorf("network %q: masquerade rules: %w", d.list.Name, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network teardown of pod %s: %w", podID, errors.Join(errs...))
	}
	return nil
}

func withPortMappings(capArgs map[string]any, pm []map[string]any) map[string]any {
	out := make(map[string]any, len(capArgs)+1)
	for k, v := range capArgs {
		out[k] = v
	}
	out["portMappings"] = pm
	return out
}
