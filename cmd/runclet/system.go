package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func imageHistory(g *globals) *cobra.Command {
	var out outputFlag
	c := &cobra.Command{
		Use:     "history REF",
		Short:   "Show how an image was built: its history entries and layers, newest first",
		Example: "  runclet image history busybox",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			img, err := s.Get(args[0])
			if err != nil {
				return shortPrefixHint(s, args[0], err)
			}
			cfg, err := s.Config(img)
			if err != nil {
				return err
			}
			type entry struct {
				Created    *time.Time `json:"created,omitempty"`
				CreatedBy  string     `json:"createdBy"`
				Comment    string     `json:"comment,omitempty"`
				EmptyLayer bool       `json:"emptyLayer,omitempty"`
				Layer      string     `json:"layer,omitempty"`
				Size       int64      `json:"size"`
			}
			var entries []entry
			layer := 0
			for _, h := range cfg.History {
				e := entry{Created: h.Created, CreatedBy: h.CreatedBy, Comment: h.Comment, EmptyLayer: h.EmptyLayer}
				if !h.EmptyLayer && layer < len(img.Layers) {
					e.Layer, e.Size = img.Layers[layer].Digest.String(), img.Layers[layer].Size
					layer++
				}
				entries = append(entries, e)
			}
			// Layers the history does not describe (images built without it).
			for ; layer < len(img.Layers); layer++ {
				entries = append(entries, entry{CreatedBy: "(no history)", Layer: img.Layers[layer].Digest.String(), Size: img.Layers[layer].Size})
			}
			for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
				entries[i], entries[j] = entries[j], entries[i]
			}
			if asJSON {
				if entries == nil {
					entries = []entry{}
				}
				return printJSON(cmd.OutOrStdout(), entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "LAYER\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
			for _, e := range entries {
				id, created, size := "<missing>", "", "0B"
				if e.Layer != "" {
					id = strings.TrimPrefix(e.Layer, "sha256:")[:12]
					size = humanSize(e.Size)
				}
				if e.Created != nil {
					created = e.Created.Local().Format(time.DateTime)
				}
				by := e.CreatedBy
				if len(by) > 60 {
					by = by[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, created, by, size, e.Comment)
			}
			return tw.Flush()
		},
	}
	out.add(c)
	return c
}

// dfRow is one line of `runclet system df`.
type dfRow struct {
	Type        string `json:"type"`
	Total       int    `json:"total"`
	Active      int    `json:"active"`
	Size        int64  `json:"size"`
	Reclaimable int64  `json:"reclaimable"`
}

func systemCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "system", Short: "Disk use and other facts about this runclet"}
	var out outputFlag
	df := &cobra.Command{
		Use:   "df",
		Short: "Show the disk space images, layers, pods and logs take, and how much gc or prune would free",
		Long: `Show the disk space images, layers, pods and logs take, and how much
would be freed. Images: their size as pulled; reclaimable are those no
pod uses (image prune --all). Layers: the unpacked layers on disk;
reclaimable are those only unused images have. Pods: their directories
(logs and app write layers included, image layers not); reclaimable are
stopped and exited pods (gc --grace=0). Logs: the apps' log files, of
which those of stopped and exited pods are reclaimable.`,
		Example: "  runclet system df\n  runclet system df -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			m, s, err := g.podManager()
			if err != nil {
				return err
			}
			imgs, err := s.List()
			if err != nil {
				return err
			}
			uses, err := m.Layout().ImageUses()
			if err != nil {
				return err
			}
			usedImage, usedChain := map[string]bool{}, map[string]bool{}
			for _, u := range uses {
				usedImage[u.Image.String()] = true
				for _, c := range u.Chains {
					usedChain[c.Encoded()] = true
				}
			}
			images := dfRow{Type: "Images", Total: len(imgs)}
			layers := dfRow{Type: "Layers"}
			for _, img := range imgs {
				images.Size += img.Size
				if usedImage[img.ID.String()] {
					images.Active++
				} else {
					images.Reclaimable += img.Size
				}
			}
			layerRoot := filepath.Join(s.Dir(), "layers", "sha256")
			entries, _ := os.ReadDir(layerRoot)
			for _, e := range entries {
				n := diskUsage(filepath.Join(layerRoot, e.Name()))
				layers.Total++
				layers.Size += n
				if usedChain[e.Name()] {
					layers.Active++
				} else {
					layers.Reclaimable += n
				}
			}
			pods := dfRow{Type: "Pods"}
			logs := dfRow{Type: "Logs"}
			all, err := m.ListPods()
			if err != nil {
				return err
			}
			for _, p := range all {
				n := diskUsage(m.Layout().PodDir(p.ID))
				pods.Total++
				pods.Size += n
				if p.Inactive() {
					pods.Reclaimable += n
				} else {
					pods.Active++
				}
				apps, _ := m.Layout().ListApps(p.ID)
				for _, a := range apps {
					st, err := os.Stat(a.LogPath)
					if err != nil {
						continue
					}
					logs.Total++
					logs.Size += st.Size()
					if p.Inactive() {
						logs.Reclaimable += st.Size()
					} else {
						logs.Active++
					}
				}
			}
			rows := []dfRow{images, layers, pods, logs}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE")
			for _, r := range rows {
				pct := 0
				if r.Size > 0 {
					pct = int(r.Reclaimable * 100 / r.Size)
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s (%d%%)\n", r.Type, r.Total, r.Active, humanSize(r.Size), humanSize(r.Reclaimable), pct)
			}
			return tw.Flush()
		},
	}
	out.add(df)
	c.AddCommand(df)
	return c
}

// diskUsage is the space (allocated blocks) of the files under dir,
// staying on dir's filesystem: an app's rootfs mounted inside a pod's
// directory is its image's layers, counted under Layers.
func diskUsage(dir string) int64 {
	var root syscall.Stat_t
	if err := syscall.Lstat(dir, &root); err != nil {
		return 0
	}
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) != nil {
			return nil
		}
		if st.Dev != root.Dev {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}
