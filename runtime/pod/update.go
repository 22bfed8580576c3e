package pod

import (
	"context"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/spec"
	"github.com/runclet/runclet/stage1-runc/proto"
)

// UpdateApp changes a created or running app's cgroup resources: the
// supervisor applies them (libcontainer's Set, like `runc update`), then
// the bundle's config.json is rewritten to match. Limits that r leaves
// at zero keep their current values (as containerd does with CRI
// UpdateContainerResources); devices are never changed, and neither is
// oom_score_adj of a process that already runs.
func (m *Manager) UpdateApp(ctx context.Context, podID, app string, r spec.Resources) (*App, error) {
	lock, err := m.l.lock(podID)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	a, err := m.findApp(podID, app)
	if err != nil {
		return nil, err
	}
	if a.State != AppCreated && a.State != AppRunning {
		return nil, errdefs.FailedPrecondition("app %s is %s; only a created or running app's resources can change", a.Name, a.State)
	}
	res, err := spec.LinuxResources(r)
	if err != nil {
		return nil, err
	}
	bundle := m.l.Bundle(podID, a.ID)
	s, err := spec.ReadBundle(bundle)
	if err != nil {
		return nil, err
	}
	if err := m.call(ctx, podID, proto.MethodUpdateApp, proto.UpdateAppParams{Name: a.ID, Resources: res}, nil); err != nil {
		return nil, err
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	s.Linux.Resources = spec.MergeResources(s.Linux.Resources, res) // keeps the devices
	if err := spec.WriteBundle(bundle, s); err != nil {
		return nil, err
	}
	return a, nil
}
