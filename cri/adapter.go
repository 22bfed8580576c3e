package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/network"
	"github.com/runclet/runclet/runtime/pod"
	"github.com/runclet/runclet/spec"
)

// Adapter is the Runtime over the real pod manager (embedded: its pod
// and app methods are the Runtime's), image store and network manager.
type Adapter struct {
	*pod.Manager
	Images  *image.Store
	Network *network.Manager

	once     sync.Once
	features Features
}

var _ Runtime = (*Adapter)(nil)

// LoadApp implements Runtime.
func (a *Adapter) LoadApp(podID, appID string) (*pod.App, error) {
	return a.Layout().LoadApp(podID, appID)
}

// AppDir implements Runtime.
func (a *Adapter) AppDir(podID, appID string) string { return a.Layout().AppDir(podID, appID) }

// PodDir implements Runtime.
func (a *Adapter) PodDir(podID string) string { return a.Layout().PodDir(podID) }

// AppSpec implements Runtime from the app's bundle.
func (a *Adapter) AppSpec(podID, appID string) (*specs.Spec, error) {
	return spec.ReadBundle(a.Layout().Bundle(podID, appID))
}

// PortForward implements Runtime: the connection is made on a thread in
// the pod's network namespace (the socket stays there), the bytes are
// copied from here.
func (a *Adapter) PortForward(ctx context.Context, netns string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	var conn net.Conn
	dial := func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		var err error
		if conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))); err == nil {
			return nil
		}
		var err6 error
		if conn, err6 = d.DialContext(ctx, "tcp6", net.JoinHostPort("::1", strconv.Itoa(int(port)))); err6 == nil {
			return nil
		}
		return err
	}
	var err error
	if netns == "" {
		err = dial()
	} else {
		err = network.WithNetNS(netns, dial)
	}
	if err != nil {
		return fmt.Errorf("port-forward: connect to port %d in the pod: %w", port, err)
	}
	defer conn.Close()
	go func() {
		// Client to pod; when the client is done, half-close so the
		// pod's side sees EOF and can answer what it has.
		io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	_, err = io.Copy(stream, conn)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("port-forward %d: %w", port, err)
	}
	return nil
}

// PullImage implements Runtime.
func (a *Adapter) PullImage(ctx context.Context, ref string, auth *authn.AuthConfig) (image.Image, error) {
	return a.Images.Pull(ctx, ref, image.PullOptions{Auth: auth})
}

// GetImage implements Runtime.
func (a *Adapter) GetImage(refOrID string) (image.Image, error) { return a.Images.Get(refOrID) }

// ListImages implements Runtime.
func (a *Adapter) ListImages() ([]image.Image, error) { return a.Images.List() }

// RemoveImage implements Runtime: by ID, the image goes with all its
// names, also while pods use it (kubelet decides what to remove, as with
// containerd): image GC keeps the layers those pods stack.
func (a *Adapter) RemoveImage(id string) error {
	_, err := a.Images.Remove(id, image.RemoveOptions{Force: true})
	return err
}

// ImageConfig implements Runtime.
func (a *Adapter) ImageConfig(img image.Image) (*ocispec.Image, error) { return a.Images.Config(img) }

// ImageFsInfo implements Runtime.
func (a *Adapter) ImageFsInfo() (string, image.Usage, error) {
	u, err := a.Images.Usage()
	return a.Images.Dir(), u, err
}

// HostDevice implements Runtime.
func (a *Adapter) HostDevice(hostPath, containerPath, permissions string) (spec.Device, error) {
	return spec.DeviceFromHost(hostPath, containerPath, permissions)
}

// HostDevices implements Runtime.
func (a *Adapter) HostDevices() ([]spec.Device, error) { return spec.HostDevices("/dev") }

// NetworkReady implements Runtime.
func (a *Adapter) NetworkReady() error {
	if a.Network == nil {
		return errdefs.FailedPrecondition("networking is not configured")
	}
	return a.Network.Ready()
}

// Features implements Runtime; the host is probed once.
func (a *Adapter) Features() Features {
	a.once.Do(func() { a.features = probeFeatures() })
	return a.features
}

func probeFeatures() Features {
	var f Features
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		release := string(bytes.TrimRight(uts.Release[:], "\x00"))
		f.RecursiveReadOnlyMounts = kernelAtLeast(release, 5, 12)
		f.UserNamespaces = kernelAtLeast(release, 5, 19)
	}
	if b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled"); err == nil {
		f.AppArmor = strings.TrimSpace(string(b)) == "Y"
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		f.SwapLimit = true
	} else if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		f.SwapLimit = strings.Contains(" "+string(b)+" ", " memory ")
	}
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	f.CgroupV2 = err == nil
	if _, err := os.Stat("/sys/fs/cgroup/hugetlb/cgroup.procs"); err == nil {
		f.Hugetlb = true
	} else if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		f.Hugetlb = strings.Contains(" "+strings.TrimSpace(string(b))+" ", " hugetlb ")
	}
	return f
}

// kernelAtLeast compares a release string such as "6.1.0-18-amd64".
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	digits := parts[1]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i]
	}
	mnr, err2 := strconv.Atoi(digits)
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || maj == major && mnr >= minor
}
