package pod

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/runclet/runclet/internal/errdefs"
)

// gcHalfMadeApps removes the apps of pod p whose creation a crash
// interrupted, and returns their IDs. Such an app is a directory without
// an app record (the crash came before the first write), or a record
// still "created" without a pid: AddApp records the pid the supervisor
// reports as soon as the supervisor has made the container, so a record
// without one was never handed out. The caller holds the pod's lock, so
// no AddApp is under way.
func (m *Manager) gcHalfMadeApps(ctx context.Context, p *Pod) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(m.l.PodDir(p.ID), "apps"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		id := e.Name()
		a, err := m.l.LoadApp(p.ID, id)
		switch {
		case errdefs.IsNotFound(err):
			err = m.removeAppDir(p.ID, id)
		case err != nil:
			errs = append(errs, fmt.Errorf("app %s of pod %s: %w", id, p.ID, err))
			continue
		case a.State == AppCreated && a.Pid == 0:
			err = m.removeApp(ctx, a)
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove half-made app %s of pod %s: %w", id, p.ID, err))
			continue
		}
		removed = append(removed, id)
	}
	return removed, errors.Join(errs...)
}

// removeAppDir removes an app directory that has no record: its rootfs
// may be mounted (removing through a mounted overlay would only whiteout
// the files and then fail on the mount point).
func (m *Manager) removeAppDir(podID, appID string) error {
	if err := unmountRootfs(filepath.Join(m.l.Bundle(podID, appID), "rootfs")); err != nil {
		return err
	}
	if err := unmountImageVolumes(m.l.imageVolumesDir(podID, appID)); err != nil {
		return err
	}
	return os.RemoveAll(m.l.AppDir(podID, appID))
}

// removeStrayAppDirs removes the app directories left in a pod after its
// recorded apps are gone: those whose record was never written.
func (m *Manager) removeStrayAppDirs(podID string) error {
	ents, err := os.ReadDir(filepath.Join(m.l.PodDir(podID), "apps"))
	if err != nil {
		return nil // no apps directory: nothing stray
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			errs = append(errs, m.removeAppDir(podID, e.Name()))
		}
	}
	return errors.Join(errs...)
}
