package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/runclet/runclet/integration/testimage"
)

// TestCLIImageHistoryAndSystemDF: image history shows the build steps,
// newest first, with their layers; system df counts images, layers, pods
// and logs and what is reclaimable.
func TestCLIImageHistoryAndSystemDF(t *testing.T) {
	pi := newPodInstance(t)
	base, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	extra, err := testimage.GoProgram("linegen", testimage.LinegenSource)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	img, err := mutate.Append(base, mutate.Addendum{Layer: extra, History: v1.History{CreatedBy: "COPY linegen /", Created: v1.Time{Time: when}}})
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.History = append(cf.History, v1.History{CreatedBy: `CMD ["sh"]`, EmptyLayer: true, Created: v1.Time{Time: when}})
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := pi.image("hist", img)
	var hist []struct {
		CreatedBy  string `json:"createdBy"`
		EmptyLayer bool   `json:"emptyLayer"`
		Layer      string `json:"layer"`
		Size       int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(pi.run("image", "history", "-o", "json", ref)), &hist); err != nil || len(hist) < 3 {
		t.Fatalf("history: %v %+v", err, hist)
	}
	if hist[0].CreatedBy != `CMD ["sh"]` || !hist[0].EmptyLayer || hist[0].Layer != "" ||
		hist[1].CreatedBy != "COPY linegen /" || !strings.HasPrefix(hist[1].Layer, "sha256:") || hist[1].Size == 0 {
		t.Errorf("history, newest first: %+v", hist)
	}
	if table := pi.run("image", "history", ref); !strings.Contains(table, "<missing>") || !strings.Contains(table, "COPY linegen /") {
		t.Errorf("history table: %q", table)
	}

	df := func() map[string][4]int64 {
		t.Helper()
		var rows []struct {
			Type              string
			Total, Active     int
			Size, Reclaimable int64
		}
		if err := json.Unmarshal([]byte(pi.run("system", "df", "-o", "json")), &rows); err != nil {
			t.Fatal(err)
		}
		out := map[string][4]int64{}
		for _, r := range rows {
			out[r.Type] = [4]int64{int64(r.Total), int64(r.Active), r.Size, r.Reclaimable}
		}
		return out
	}
	d := df()
	if d["Images"][0] != 1 || d["Images"][1] != 0 || d["Images"][3] != d["Images"][2] || d["Layers"][0] < 2 || d["Pods"][0] != 0 {
		t.Errorf("df with an unused image: %v", d)
	}
	id := lastLine(pi.run("run", "-d", ref, "--", "sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; echo; sleep 300"))
	time.Sleep(500 * time.Millisecond)
	d = df()
	if d["Images"][1] != 1 || d["Images"][3] != 0 || d["Layers"][3] != 0 || d["Pods"][1] != 1 || d["Pods"][3] != 0 || d["Logs"][2] < 100000 {
		t.Errorf("df with a running pod: %v", d)
	}
	pi.run("stop", "-t", "0", id)
	d = df()
	if d["Pods"][1] != 0 || d["Pods"][3] == 0 || d["Pods"][3] != d["Pods"][2] || d["Logs"][3] < 100000 {
		t.Errorf("df with a stopped pod: %v", d)
	}
	if table := pi.run("system", "df"); !strings.Contains(table, "RECLAIMABLE") || !strings.Contains(table, "Logs") {
		t.Errorf("df table: %q", table)
	}
}
