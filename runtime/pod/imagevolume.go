package pod

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/spec"
)

// ImageVolumeConfig mounts an image's filesystem, read-only, into an app
// (Kubernetes image volumes, CRI Mount.image).
type ImageVolumeConfig struct {
	// Image is a reference or id of an image in the store.
	Image string
	// SubPath is a directory of the image to mount instead of its root.
	SubPath       string
	ContainerPath string
	Propagation   spec.Propagation
}

// ImageVolume is an app's recorded image volume.
type ImageVolume struct {
	Image string `json:"image"`
	// ImageRef is the image's id, what PullImage answered as image_ref.
	ImageRef      string          `json:"imageRef"`
	SubPath       string          `json:"subPath,omitempty"`
	ContainerPath string          `json:"containerPath"`
	Layers        []digest.Digest `json:"layers"`
}

// imageVolumesDir holds an app's image volume mounts, one per volume.
func (l Layout) imageVolumesDir(podID, appID string) string {
	return filepath.Join(l.AppDir(podID, appID), "imagevols")
}

// mountImageVolumes mounts each volume's image layers read-only under the
// app's directory and returns the bind mounts for the spec. On error
// nothing stays mounted.
// The imagevols dir is restricted like the app dir (gid: the host gid of
// a user-namespaced pod's root, else -1), as libcontainer's init may
// resolve the bind sources as the pod's root.
func (m *Manager) mountImageVolumes(podID, appID string, gid int, vols []ImageVolumeConfig) (rec []ImageVolume, mounts []spec.Mount, retErr error) {
	dir := m.l.imageVolumesDir(podID, appID)
	defer func() {
		if retErr != nil {
			unmountImageVolumes(dir)
		}
	}()
	if err := mkdirRestricted(dir, gid); err != nil {
		return nil, nil, err
	}
	for i, v := range vols {
		sub := path.Clean(v.SubPath)
		if v.SubPath != "" && (path.IsAbs(v.SubPath) || sub == ".." || strings.HasPrefix(sub, "../")) {
			return nil, nil, errdefs.InvalidArgument("image volume %s: sub path %q must be relative and stay inside the image", v.ContainerPath, v.SubPath)
		}
		img, err := m.opts.Images.Get(v.Image)
		if err != nil {
			return nil, nil, fmt.Errorf("image volume %s: %w", v.ContainerPath, err)
		}
		layers, err := m.opts.Images.LayerDirs(img)
		if err != nil {
			return nil, nil, err
		}
		target := filepath.Join(dir, strconv.Itoa(i))
		if err := os.MkdirAll(target, 0o755); err != nil {
			return nil, nil, err
		}
		if err := mountReadOnlyLayers(layers, target); err != nil {
			return nil, nil, fmt.Errorf("image volume %s: %w", v.ContainerPath, err)
		}
		src, err := resolveInImage(target, sub)
		if err != nil {
			return nil, nil, errdefs.InvalidArgument("image volume %s: sub path %q of image %s: %v", v.ContainerPath, v.SubPath, v.Image, err)
		}
		r := ImageVolume{Image: v.Image, ImageRef: img.ID.String(), SubPath: v.SubPath, ContainerPath: v.ContainerPath}
		for _, l := range img.Layers {
			r.Layers = append(r.Layers, l.ChainID)
		}
		rec = append(rec, r)
		mounts = append(mounts, spec.Mount{HostPath: src, ContainerPath: v.ContainerPath, Readonly: true, Propagation: v.Propagation})
	}
	return rec, mounts, nil
}

// resolveInImage resolves sub inside the image mounted at root, symlinks
// included, as if root were "/" (an absolute symlink in the image must
// not reach the host), and returns the host path of the result. The
// mount is read-only and its layers immutable, so the path stays valid.
func resolveInImage(root, sub string) (string, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, sub, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	if real != root && !strings.HasPrefix(real, root+"/") {
		return "", fmt.Errorf("resolves outside the image (%s)", real)
	}
	return real, nil
}

// mountReadOnlyLayers makes the layers (lowest first) one read-only tree
// at target: overlayfs needs two lower dirs when it has no upper, so a
// single layer is bind-mounted instead.
func mountReadOnlyLayers(layers []string, target string) error {
	switch len(layers) {
	case 0:
		return errdefs.InvalidArgument("the image has no layers")
	case 1:
		if err := unix.Mount(layers[0], target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", layers[0], err)
		}
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("make %s read-only: %w", target, err)
		}
		return nil
	}
	lowers := slices.Clone(layers)
	slices.Reverse(lowers)
	for _, l := range lowers {
		if strings.ContainsAny(l, ":,") {
			return fmt.Errorf("layer path %q cannot be an overlayfs lower dir", l)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("image has too many layers (%d) for one overlayfs mount option page", len(layers))
	}
	if err := unix.Mount("overlay", target, "overlay", unix.MS_RDONLY, opts); err != nil {
		return fmt.Errorf("mount image layers at %s: %w", target, err)
	}
	return nil
}

// unmountImageVolumes unmounts every image volume of an app (by its
// imagevols dir); nothing mounted, or no dir, is fine.
func unmountImageVolumes(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, unmountRootfs(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}
