package cri

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// CreateContainer creates an app (not started) in a ready pod. Like
// RunPodSandbox it runs detached from the client and undoes itself if the
// client is gone when it is done.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if err := validateID("pod sandbox ID", req.PodSandboxId); err != nil {
		return nil, err
	}
	p, _, err := s.idx.sandbox(req.PodSandboxId)
	if err != nil {
		return nil, err
	}
	if err := validateContainerConfig(req.GetConfig(), p.LogDirectory); err != nil {
		return nil, err
	}
	if p.State != pod.PodReady {
		return nil, errdefs.FailedPrecondition("pod sandbox %s is %s, not ready", p.ID, p.State)
	}
	ac, err := s.appConfig(ctx, p, req.GetConfig(), req.GetSandboxConfig())
	if err != nil {
		return nil, err
	}
	detached := context.WithoutCancel(ctx)
	// NRI plugins are asked (and adjust it) before the container is
	// indexed: nothing lists or starts it until they have answered.
	unblock := s.nri.blockSync()
	defer unblock()
	a, err := s.createContainer(detached, p, ac)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		logger(ctx).Warn("client went away while its container was created; removing it", "container", a.ID)
		s.nri.undoCreated(detached, p, a)
		if rerr := s.rt.RemoveApp(detached, p.ID, a.ID); rerr != nil && !errdefs.IsNotFound(rerr) {
			logger(ctx).Error("removing an orphaned container", "container", a.ID, "err", rerr)
		}
		return nil, err
	}
	s.track(a)
	unblock()
	s.nri.postCreateContainer(detached, a.ID)
	return &runtimeapi.CreateContainerResponse{ContainerId: a.ID}, nil
}

// appConfig maps a validated ContainerConfig to an app request for pod p.
func (s *Server) appConfig(ctx context.Context, p *pod.Pod, c *runtimeapi.ContainerConfig, sb *runtimeapi.PodSandboxConfig) (pod.AppConfig, error) {
	logPath, err := validateLogPath(p.LogDirectory, c.LogPath)
	if err != nil {
		return pod.AppConfig{}, err
	}
	ac := pod.AppConfig{
		Name: c.Metadata.Name, Attempt: c.Metadata.Attempt, Image: c.Image.Image,
		Labels: copyMap(c.Labels), Annotations: copyMap(c.Annotations), LogPath: logPath,
		Tty: c.Tty, Stdin: c.Stdin, StdinOnce: c.StdinOnce,
	}
	if len(c.CDIDevices) > 0 {
		return ac, notImplemented("CDI devices (%s) are", c.CDIDevices[0].Name)
	}
	if c.StopSignal != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		ac.StopSignal = c.StopSignal.String() // "SIGQUIT": the names are the kernel's
	}
	sp := &ac.Spec
	sp.Command, sp.Args, sp.WorkingDir = c.Command, c.Args, c.WorkingDir
	for _, kv := range c.Envs {
		sp.Env = append(sp.Env, kv.Key+"="+string(kv.Value))
	}
	if sp.Mounts, ac.ImageVolumes, err = mounts(c.Mounts, s.features.RecursiveReadOnlyMounts); err != nil {
		return ac, err
	}
	for _, d := range c.Devices {
		dev, err := s.rt.HostDevice(d.HostPath, d.ContainerPath, d.Permissions)
		if err != nil {
			return ac, err
		}
		sp.Devices = append(sp.Devices, dev)
	}
	if err := checkUnified(c.GetLinux().GetResources(), s.features); err != nil {
		return ac, err
	}
	sp.Resources = resources(c.GetLinux().GetResources(), s.features)
	sp.Seccomp = spec.SeccompProfile{Kind: spec.SeccompUnconfined}
	sc := c.GetLinux().GetSecurityContext()
	if !sc.GetPrivileged() {
		if sp.ApparmorProfile, err = apparmor(sc, s.features.AppArmor); err != nil {
			return ac, err
		}
		if sp.ApparmorProfile == spec.AppArmorDefaultProfile {
			if err := s.appArmor.ensure(ctx); err != nil {
				return ac, err
			}
		}
	}
	if sc == nil {
		return ac, nil
	}
	if err := checkContainerNamespaces(sc.NamespaceOptions, p); err != nil {
		return ac, err
	}
	if caps := sc.Capabilities; caps != nil {
		if len(caps.AddAmbientCapabilities) > 0 {
			return ac, notImplemented("ambient capabilities (%v) are", caps.AddAmbientCapabilities)
		}
		sp.CapAdd, sp.CapDrop = caps.AddCapabilities, caps.DropCapabilities
	}
	if sc.Privileged {
		if sb != nil && !sb.GetLinux().GetSecurityContext().GetPrivileged() {
			return ac, errdefs.InvalidArgument("container %s is privileged but its pod sandbox is not", c.Metadata.Name)
		}
		sp.Privileged = true
		if sp.HostDevices, err = s.rt.HostDevices(); err != nil {
			return ac, err
		}
	}
	if sc.RunAsUser != nil {
		v := sc.RunAsUser.Value
		sp.RunAsUser = &v
	}
	if sc.RunAsGroup != nil {
		v := sc.RunAsGroup.Value
		sp.RunAsGroup = &v
	}
	sp.RunAsUsername = sc.RunAsUsername
	sp.SupplementalGroups = sc.SupplementalGroups
	sp.SupplementalGroupsPolicy = sc.SupplementalGroupsPolicy.String()
	sp.ReadonlyRootfs, sp.NoNewPrivs = sc.ReadonlyRootfs, sc.NoNewPrivs
	if len(sc.MaskedPaths) > 0 {
		sp.MaskedPaths = sc.MaskedPaths
	}
	if len(sc.ReadonlyPaths) > 0 {
		sp.ReadonlyPaths = sc.ReadonlyPaths
	}
	if sp.Seccomp, err = seccomp(sc); err != nil {
		return ac, err
	}
	return ac, nil
}

// StartContainer starts a created container.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	if err := validateID("container ID", req.ContainerId); err != nil {
		return nil, err
	}
	c, err := s.idx.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	detached := context.WithoutCancel(ctx)
	_, err = s.nri.startContainer(detached, c, func() (*pod.App, error) {
		a, err := s.rt.StartApp(detached, c.app.PodID, c.app.ID)
		if err != nil {
			s.refreshApp(appKey{c.app.PodID, c.app.ID})
			return nil, err
		}
		s.idx.updateApp(a)
		return a, nil
	})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

// StopContainer stops a container: its stop signal, then SIGKILL after
// the timeout. Stopping a stopped or unknown container succeeds.
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if err := validateID("container ID", req.ContainerId); err != nil {
		return nil, err
	}
	if req.Timeout < 0 {
		return nil, invalid("timeout %d must not be negative", req.Timeout)
	}
	c, err := s.idx.container(req.ContainerId)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	detached := context.WithoutCancel(ctx)
	a, err := s.rt.StopApp(detached, c.app.PodID, c.app.ID, time.Duration(req.Timeout)*time.Second)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	s.idx.updateApp(a)
	s.nri.containerStopped(detached, a.ID)
	return &runtimeapi.StopContainerResponse{}, nil
}

// RemoveContainer removes a container, killing it if it runs; a container
// that is already gone is success.
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	if err := validateID("container ID", req.ContainerId); err != nil {
		return nil, err
	}
	c, err := s.idx.container(req.ContainerId)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	detached := context.WithoutCancel(ctx)
	removal := s.nri.describeContainer(c) // before its bundle goes
	if err := s.rt.RemoveApp(detached, c.app.PodID, c.app.ID); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	s.watch.remove(c.app.ID)
	s.idx.removeContainer(c.app.ID)
	s.stats.forget(c.app.ID)
	s.nri.containerRemoved(detached, removal)
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// ContainerStatus answers from memory.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if err := validateID("container ID", req.ContainerId); err != nil {
		return nil, err
	}
	c, err := s.idx.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: criContainerStatus(c)}
	if req.Verbose {
		b, err := json.Marshal(map[string]any{"app": c.app, "pid": c.app.Pid, "user": c.user})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

func (s *Server) listContainers(f *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	if f != nil && f.State != nil && !validContainerState(f.State.State) {
		return nil, invalid("container state %d is unknown", f.State.State)
	}
	var out []*runtimeapi.Container
	for _, c := range s.idx.containers() {
		ctr := criContainer(c)
		if f != nil {
			if f.Id != "" && !strings.HasPrefix(ctr.Id, f.Id) {
				continue
			}
			if f.PodSandboxId != "" && !strings.HasPrefix(ctr.PodSandboxId, f.PodSandboxId) {
				continue
			}
			if f.State != nil && f.State.State != ctr.State {
				continue
			}
			if !matchLabels(ctr.Labels, f.LabelSelector) {
				continue
			}
		}
		out = append(out, ctr)
	}
	return out, nil
}

// ListContainers answers from memory.
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	ctrs, err := s.listContainers(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListContainersResponse{Containers: ctrs}, nil
}

// StreamContainers is ListContainers in chunks.
func (s *Server) StreamContainers(req *runtimeapi.StreamContainersRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	ctrs, err := s.listContainers(req.GetFilter())
	if err != nil {
		return err
	}
	return sendChunks(ctrs, func(items []*runtimeapi.Container) error {
		return stream.Send(&runtimeapi.StreamContainersResponse{Containers: items})
	})
}
