package pod

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestImageUsesReadsEveryPodDirOnDisk(t *testing.T) {
	l := Layout{Root: t.TempDir(), RunRoot: t.TempDir()}
	img1, img2, vol := digest.FromString("img1"), digest.FromString("img2"), digest.FromString("vol")
	c1, c2, cv := digest.FromString("c1"), digest.FromString("c2"), digest.FromString("cv")
	mk := func(p *Pod, apps ...*App) {
		t.Helper()
		if err := os.MkdirAll(l.PodDir(p.ID), 0o700); err != nil {
			t.Fatal(err)
		}
		if p.Name != "" {
			if err := l.savePod(p); err != nil {
				t.Fatal(err)
			}
		}
		for _, a := range apps {
			a.PodID = p.ID
			if err := os.MkdirAll(l.AppDir(p.ID, a.ID), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := l.saveApp(a); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A stopped CRI pod with an image volume, a CLI pod, a pod whose
	// record is unreadable, and an app dir a crash left without app.json.
	mk(&Pod{ID: "p1", Name: "web", Namespace: "default", State: PodStopped},
		&App{ID: "a1", ImageID: img1, Layers: []digest.Digest{c1}, ImageVolumes: []ImageVolume{{ImageRef: vol.String(), Layers: []digest.Digest{cv}}}})
	mk(&Pod{ID: "p2", Name: "cli", State: PodReady}, &App{ID: "a2", ImageID: img2, Layers: []digest.Digest{c1, c2}})
	mk(&Pod{ID: "p3"}, &App{ID: "a3", ImageID: img2, Layers: []digest.Digest{c2}})
	os.MkdirAll(l.AppDir("p2", "halfmade"), 0o700)

	uses, err := l.ImageUses()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range uses {
		var chains []string
		for _, c := range u.Chains {
			chains = append(chains, map[digest.Digest]string{c1: "c1", c2: "c2", cv: "cv"}[c])
		}
		got = append(got, u.Pod+" "+map[digest.Digest]string{img1: "img1", img2: "img2", vol: "vol"}[u.Image]+" "+strings.Join(chains, ","))
	}
	slices.Sort(got)
	want := []string{"cli img2 c1,c2", "default/web img1 c1", "default/web vol cv", "p3 img2 c2"}
	if !slices.Equal(got, want) {
		t.Fatalf("uses %q, want %q", got, want)
	}

	// An app record that cannot be read stops the listing (and so GC).
	if err := os.WriteFile(l.appFile("p2", "a2"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ImageUses(); err == nil || !strings.Contains(err.Error(), filepath.Join("p2", "apps", "a2")) {
		t.Fatalf("corrupt app.json: %v", err)
	}
}
