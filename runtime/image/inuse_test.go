package image

import (
	"context"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/testutil"
)

// TestRemoveAndPruneKeepWhatPodsUse: an image a pod uses is not removed
// by ID, digest or its last tag (the error names the pod), one of its two
// tags can go, prune --all keeps it, Force removes the record while GC
// keeps the layers, and a failing hook stops every removal.
func TestRemoveAndPruneKeepWhatPodsUse(t *testing.T) {
	testutil.RequiresRoot(t, whyRoot)
	reg := testregistry.StartTB(t)
	must[v1.Hash](t)(reg.Push("used:1", must[v1.Image](t)(testimage.Busybox())))
	must[v1.Hash](t)(reg.Push("unused:1", must[v1.Image](t)(testimage.MultiLayer())))
	s := newStore(t, nil)
	used := must[Image](t)(s.Pull(context.Background(), reg.Host()+"/used:1", PullOptions{}))
	unused := must[Image](t)(s.Pull(context.Background(), reg.Host()+"/unused:1", PullOptions{}))
	must[Image](t)(s.Tag(used.ID.String(), "example.com/second:2"))
	var chains []digest.Digest
	for _, l := range used.Layers {
		chains = append(chains, l.ChainID)
	}
	s.InUse = func() ([]Use, error) {
		return []Use{{Pod: "webpod", PodID: "0123", Image: used.ID, Chains: chains}}, nil
	}

	for _, name := range []string{used.ID.String(), used.ID.Encoded()[:12], used.ManifestDigest.String()} {
		_, err := s.Remove(name, RemoveOptions{})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "webpod") {
			t.Fatalf("removing %s in use: %v, want a failed precondition naming the pod", name, err)
		}
	}
	// One of two tags goes; the last one is refused.
	must[Image](t)(s.Remove(reg.Host()+"/used:1", RemoveOptions{}))
	if _, err := s.Remove("example.com/second:2", RemoveOptions{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("removing the last tag of an image in use: %v", err)
	}
	if got := must[Image](t)(s.Get(used.ID.String())); len(got.RepoTags) != 1 || got.RepoTags[0] != "example.com/second:2" {
		t.Fatalf("tags after the refused removal: %v", got.RepoTags)
	}

	removed, _, err := s.Prune(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].ID != unused.ID {
		t.Fatalf("prune --all removed %v, want only the unused image", removed)
	}
	if _, err := s.Get(used.ID.String()); err != nil {
		t.Fatalf("prune --all removed the image in use: %v", err)
	}
	if _, err := s.LayerDirs(used); err != nil {
		t.Fatalf("layers of the image in use: %v", err)
	}

	// Force: the record goes, the layers stay while the pod exists.
	must[Image](t)(s.Remove(used.ID.String(), RemoveOptions{Force: true}))
	if _, err := s.Get(used.ID.String()); !errdefs.IsNotFound(err) {
		t.Fatalf("forced removal kept the record: %v", err)
	}
	if _, err := s.LayerDirs(used); err != nil {
		t.Fatalf("forced removal freed layers a pod stacks: %v", err)
	}

	// A hook that fails stops GC, prune and removal alike.
	must[Image](t)(s.Pull(context.Background(), reg.Host()+"/unused:1", PullOptions{}))
	s.InUse = func() ([]Use, error) { return nil, errors.New("pods dir unreadable") }
	if _, err := s.GC(context.Background()); err == nil {
		t.Fatal("GC ran without knowing what is in use")
	}
	if _, _, err := s.Prune(context.Background(), true); err == nil {
		t.Fatal("prune ran without knowing what is in use")
	}
	if _, err := s.Remove(unused.ID.String(), RemoveOptions{}); err == nil {
		t.Fatal("remove ran without knowing what is in use")
	}
	if _, err := s.LayerDirs(used); err != nil {
		t.Fatalf("layers gone after failed GCs: %v", err)
	}
}
