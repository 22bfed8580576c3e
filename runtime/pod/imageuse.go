package pod

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/runtime/image"
)

// ImageUses lists what every pod on the data root uses of the image
// store: per app, the image and the layer chains its rootfs stacks, and
// per image volume likewise. It reads the pod directories on disk, not a
// process's memory, so it covers pods in any state (a stopped pod still
// holds its rootfs) and pods that another runclet process (the daemon, or
// the CLI) made. It is the image store's InUse hook; the image commands of
// the CLI install it without building a pod manager.
//
// Pods are named namespace/name (CRI) or name (CLI). A pod directory
// whose record is unreadable still counts, by its ID; an app directory
// without app.json is the debris of a crashed creation and stacks
// nothing; an app.json that cannot be parsed is an error, so that image
// GC stops rather than guesses.
func (l Layout) ImageUses() ([]image.Use, error) {
	pods, err := os.ReadDir(l.podsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	var out []image.Use
	for _, pe := range pods {
		if !pe.IsDir() {
			continue
		}
		podID := pe.Name()
		name := podID
		if p, err := l.LoadPod(podID); err == nil && p.Name != "" {
			name = p.Name
			if p.Namespace != "" {
				name = p.Namespace + "/" + p.Name
			}
		}
		apps, err := os.ReadDir(filepath.Join(l.PodDir(podID), "apps"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // no app yet, or the pod was removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("listing apps of pod %s: %w", podID, err)
		}
		for _, ae := range apps {
			a := &App{}
			if err := readJSON(l.appFile(podID, ae.Name()), a); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return nil, fmt.Errorf("app %s of pod %s: %w", ae.Name(), podID, err)
			}
			out = append(out, image.Use{Pod: name, PodID: podID, Image: a.ImageID, Chains: a.Layers})
			for _, v := range a.ImageVolumes {
				id, _ := digest.Parse(v.ImageRef)
				out = append(out, image.Use{Pod: name, PodID: podID, Image: id, Chains: v.Layers})
			}
		}
	}
	return out, nil
}
