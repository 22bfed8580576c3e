package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image"
	"github.com/runclet/runclet/runtime/pod"
)

// imageStore opens the image store with the pods' in-use hook: it reads
// every pod directory on the data root, so removal, prune and GC from the
// CLI keep what any pod uses, also pods a running daemon made.
func (g *globals) imageStore() (*image.Store, error) {
	skip, err := skipImageVerification()
	if err != nil {
		return nil, err
	}
	s, err := image.Open(g.cfg.Root, image.Options{
		Registries:             g.cfg.Registries,
		MaxConcurrentDownloads: g.cfg.Image.MaxConcurrentDownloads,
		Unpack:                 g.cfg.Image.Unpack,
		Trust:                  g.trustVerifier(),
		SkipVerify:             skip,
	})
	if err != nil {
		return nil, err
	}
	s.InUse = pod.Layout{Root: g.cfg.Root, RunRoot: g.cfg.RunRoot}.ImageUses
	return s, nil
}

func imageCommand(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Manage images"}
	c.AddCommand(imagePull(g), imageImport(g), imageExport(g), imageList(g), imageInspect(g),
		imageRemove(g), imageTag(g), imageGC(g), imagePrune(g), imageHistory(g), imageVerify(g))
	return c
}

func imagePull(g *globals) *cobra.Command {
	var creds string
	var quiet bool
	c := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			opts := image.PullOptions{}
			if creds != "" {
				user, pass, ok := strings.Cut(creds, ":")
				if !ok {
					return errdefs.InvalidArgument("--creds wants USER:PASSWORD")
				}
				opts.Auth = &authn.AuthConfig{Username: user, Password: pass}
			}
			out := cmd.OutOrStdout()
			p := newProgress(out, quiet)
			if p != nil {
				opts.Progress = p.event
			}
			// Ctrl-C cancels the pull, which removes its partial downloads
			// and layers; a second Ctrl-C ends runclet at once.
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			img, err := s.Pull(ctx, args[0], opts)
			// The last redraw moves the cursor up over the layer lines: it
			// must come before the image ID, which it would overwrite.
			p.finish()
			if err != nil {
				return interruptedErr(ctx, "pull of "+args[0], err)
			}
			fmt.Fprintf(out, "%s\n", img.ID)
			return nil
		},
	}
	c.Flags().StringVar(&creds, "creds", "", "registry credentials USER:PASSWORD (default: ~/.docker/config.json)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress display")
	return c
}

func imageImport(g *globals) *cobra.Command {
	var verify bool
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "Import images from a docker save or OCI layout tarball, maybe compressed, or an OCI layout directory (- for stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			var r io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := image.OpenArchive(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			before, err := s.List()
			if err != nil {
				return err
			}
			imgs, err := s.Import(ctx, r, nil)
			if err != nil {
				return interruptedErr(ctx, "import of "+args[0], err)
			}
			if verify {
				if err := verifyImported(ctx, s, imgs, before); err != nil {
					return err
				}
			}
			for _, img := range imgs {
				name := "<none>"
				if len(img.RepoTags) > 0 {
					name = strings.Join(img.RepoTags, ", ")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "imported %s %s\n", name, img.ID)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&verify, "verify", false, "check the imported images' signatures at their registries against the trust policy; a refused image is removed again")
	return c
}

func imageExport(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "export REF [REF...] FILE",
		Short: "Export images as an OCI layout tarball that docker load also reads (- for stdout); Docker manifests are written with OCI media types, so their digests change",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			refs, file := args[:len(args)-1], args[len(args)-1]
			if file == "-" {
				done, err := s.ExportImages(cmd.Context(), cmd.OutOrStdout(), refs)
				if err == nil {
					printExported(cmd.ErrOrStderr(), done)
				}
				return err
			}
			// Written to a temporary file next to FILE and renamed, so
			// FILE is never half written; errors name FILE, not the
			// temporary file.
			dir := dirOf(file)
			if st, err := os.Stat(dir); err != nil {
				return errdefs.InvalidArgument("export to %s: directory %s: %w", file, dir, unwrapPath(err))
			} else if !st.IsDir() {
				return errdefs.InvalidArgument("export to %s: %s is not a directory", file, dir)
			}
			if st, err := os.Stat(file); err == nil && st.IsDir() {
				return errdefs.InvalidArgument("export to %s: it is a directory; name a file", file)
			}
			f, err := os.CreateTemp(dir, ".runclet-export-*")
			if err != nil {
				return fmt.Errorf("export to %s: %w", file, unwrapPath(err))
			}
			defer os.Remove(f.Name())
			// Exported archives are for people: the umask decides their
			// mode, as for any file a command writes (CreateTemp is 0600).
			if err := f.Chmod(0o666 &^ os.FileMode(currentUmask())); err != nil {
				f.Close()
				return fmt.Errorf("export to %s: %w", file, unwrapPath(err))
			}
			done, err := s.ExportImages(cmd.Context(), f, refs)
			if err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("export to %s: %w", file, unwrapPath(err))
			}
			if err := os.Rename(f.Name(), file); err != nil {
				return fmt.Errorf("export to %s: %w", file, unwrapPath(err))
			}
			printExported(cmd.OutOrStdout(), done)
			return nil
		},
	}
}

// printExported says what went into an export, and which manifests got
// a new digest (Docker schema2 rewritten with OCI media types).
func printExported(w io.Writer, done []image.Exported) {
	for _, e := range done {
		name := e.Name
		if name == "" {
			name = "<none>"
		}
		fmt.Fprintf(w, "exported %s %s manifest %s", name, e.ID, e.ManifestDigest)
		if e.Converted {
			fmt.Fprintf(w, " (OCI media types; the stored Docker manifest is %s)", e.StoredManifestDigest)
		}
		fmt.Fprintln(w)
	}
}

func dirOf(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i+1]
	}
	return "."
}

type outputFlag struct{ format string }

func (o *outputFlag) add(c *cobra.Command) {
	c.Flags().StringVarP(&o.format, "output", "o", "table", "output format: table or json")
}

func (o *outputFlag) json() (bool, error) {
	switch o.format {
	case "table":
		return false, nil
	case "json":
		return true, nil
	}
	return false, errdefs.InvalidArgument("--output %q: want table or json", o.format)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func imageList(g *globals) *cobra.Command {
	var out listOutput
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Example: "  runclet image ls\n  runclet image ls -q --filter dangling=true\n  runclet image ls --format '{{.ID}} {{.Size}}'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			all, err := s.List()
			if err != nil {
				return err
			}
			imgs := []image.Image{}
			for _, img := range all {
				if out.match(func(k, v string) bool {
					switch k {
					case "id":
						return strings.HasPrefix(img.ID.Encoded(), strings.TrimPrefix(v, "sha256:"))
					case "reference":
						for _, t := range append(slices.Clone(img.RepoTags), img.RepoDigests...) {
							if globMatch(v, t) {
								return true
							}
						}
					case "dangling":
						return (len(img.RepoTags) == 0) == (v == "true")
					}
					return false
				}) {
					imgs = append(imgs, img)
				}
			}
			w := cmd.OutOrStdout()
			return render(w, &out, imgs, func(img image.Image) string { return img.ID.Encoded() }, func(wide bool) error {
				tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "IMAGE\tTAG\tDIGEST\tIMAGE ID\tSIZE\tVERIFIED")
				for _, img := range imgs {
					dg := img.ManifestDigest.String()
					if img.IndexDigest != "" {
						dg = img.IndexDigest.String()
					}
					id := img.ID.Encoded()
					if !wide {
						id = id[:12]
					}
					if len(img.RepoTags) == 0 {
						fmt.Fprintf(tw, "<none>\t<none>\t%s\t%s\t%s\t%s\n", dg, id, humanSize(img.Size), img.Verification.Summary())
					}
					for _, t := range img.RepoTags {
						i := strings.LastIndex(t, ":")
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t[:i], t[i+1:], dg, id, humanSize(img.Size), img.Verification.Summary())
					}
				}
				return tw.Flush()
			})
		},
	}
	out.add(c, "image", "id", "reference", "dangling")
	return c
}

func imageInspect(g *globals) *cobra.Command {
	var full bool
	c := &cobra.Command{
		Use:   "inspect REF",
		Short: "Print an image's configuration as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			if full {
				return printJSON(cmd.OutOrStdout(), map[string]any{"image": img, "config": cfg})
			}
			return printJSON(cmd.OutOrStdout(), cfg)
		},
	}
	c.Flags().BoolVar(&full, "full", false, "also print the store's record: names, digests, layers")
	return c
}

func imageRemove(g *globals) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:     "rm REF|ID|DIGEST...",
		Aliases: []string{"remove", "rmi"},
		Short:   "Remove a tag, or an image with all its tags (by ID or digest)",
		Long: `Remove a tag, or an image with all its tags (by ID or digest).

An image that a pod uses (running or stopped) is not removed unless
--force is given; with --force its names go and the pods keep its layers
until they are removed themselves. Removing one of several tags always works.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			for _, a := range args {
				img, err := s.Remove(a, image.RemoveOptions{Force: force})
				if err != nil {
					return shortPrefixHint(s, a, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s (%s)\n", a, img.ID)
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "remove an image even if pods use it (they keep its layers)")
	return c
}

func imageTag(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE TARGET",
		Short: "Give an image another name",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			_, err = s.Tag(args[0], args[1])
			return err
		},
	}
}

func imageGC(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove unreferenced blobs, unpacked layers and crash debris",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			st, err := s.GC(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d blobs, %d layers, %d partial downloads; freed %s\n", st.Blobs, st.Layers, st.Debris, humanSize(st.Bytes))
			return nil
		},
	}
}

func imagePrune(g *globals) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "prune",
		Short: "Remove untagged images (with --all, every image); images any pod uses are kept",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			removed, st, err := s.Prune(cmd.Context(), all)
			for _, img := range removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", img.ID)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "freed %s\n", humanSize(st.Bytes))
			return nil
		},
	}
	c.Flags().BoolVarP(&all, "all", "a", false, "remove every image, not only untagged ones")
	return c
}

func humanSize(n int64) string {
	const unit = 1000 // as docker and crictl print sizes
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3g%cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// progress draws per-layer lines like `docker pull` on a terminal.
type progress struct {
	w     io.Writer
	order []string
	state map[string]image.ProgressEvent
	drawn int
	last  time.Time
	mu    chan struct{}
	done  bool // finish has drawn the last state
	// For the total line: each downloaded layer's size and bytes so
	// far, and when the first download began.
	size, got map[string]int64
	start     time.Time
}

func newProgress(w io.Writer, quiet bool) *progress {
	f, ok := w.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	p := &progress{w: w, state: map[string]image.ProgressEvent{}, mu: make(chan struct{}, 1), size: map[string]int64{}, got: map[string]int64{}}
	return p
}

func (p *progress) event(ev image.ProgressEvent) {
	p.mu <- struct{}{}
	defer func() { <-p.mu }()
	if _, ok := p.state[ev.ID]; !ok {
		p.order = append(p.order, ev.ID)
	}
	if ev.Total == 0 {
		ev.Total = p.state[ev.ID].Total
	}
	switch ev.Action {
	case "downloading":
		if p.start.IsZero() {
			p.start = time.Now()
		}
		if _, ok := p.size[ev.ID]; !ok {
			p.size[ev.ID] = ev.Total
		}
		p.got[ev.ID] = ev.Current
	case "extracting", "done":
		if n, ok := p.size[ev.ID]; ok {
			p.got[ev.ID] = n // downloaded in full
		}
	}
	p.state[ev.ID] = ev
	if p.done {
		return
	}
	final := ev.Action == "done" || ev.Action == "already exists"
	if !final && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.redraw()
}

func (p *progress) redraw() {
	p.last = time.Now()
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA", p.drawn)
	}
	for _, id := range p.order {
		ev := p.state[id]
		line := fmt.Sprintf("%s: %s", id, ev.Action)
		if ev.Action == "downloading" || ev.Action == "extracting" {
			line += fmt.Sprintf(" %s/%s", humanSize(ev.Current), humanSize(ev.Total))
		}
		fmt.Fprintf(p.w, "\x1b[2K%s\n", line)
	}
	p.drawn = len(p.order)
	if len(p.size) > 0 {
		fmt.Fprintf(p.w, "\x1b[2K%s\n", p.totalLine())
		p.drawn++
	}
}

// totalLine is one bar for the whole pull: bytes, rate and time left.
func (p *progress) totalLine() string {
	var total, got int64
	for id, n := range p.size {
		total += n
		got += p.got[id]
	}
	const width = 30
	filled := 0
	if total > 0 {
		filled = int(got * width / total)
	}
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	line := fmt.Sprintf("total [%s] %s/%s", bar, humanSize(got), humanSize(total))
	if elapsed := time.Since(p.start); elapsed > 0 && got > 0 {
		rate := float64(got) / elapsed.Seconds()
		line += fmt.Sprintf("  %s/s", humanSize(int64(rate)))
		if got < total {
			line += fmt.Sprintf("  ETA %s", time.Duration(float64(total-got)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	return line
}

// finish draws the final state once; later events draw nothing, so
// nothing printed after finish is overwritten. A nil progress is quiet.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu <- struct{}{}
	defer func() { <-p.mu }()
	if !p.done {
		p.redraw()
	}
	p.done = true
}

// shortPrefixHint explains a "not found" for a hex string shorter than
// the 6 characters an image ID prefix needs when some image ID starts
// with it: the user meant an ID, not a name.
func shortPrefixHint(s *image.Store, ref string, err error) error {
	if !errdefs.IsNotFound(err) || len(ref) >= 6 || !isHexString(ref) {
		return err
	}
	imgs, lerr := s.List()
	if lerr != nil {
		return err
	}
	for _, img := range imgs {
		if strings.HasPrefix(img.ID.Encoded(), ref) {
			return errdefs.InvalidArgument("image %q not found: an image ID prefix needs at least 6 characters (image %s starts with it)", ref, img.ID.Encoded()[:12])
		}
	}
	return err
}

func isHexString(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// unwrapPath keeps only the cause of a *PathError or *LinkError: the
// caller names the path the user gave, not a temporary file's.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// currentUmask is the process's umask, from /proc (reading it with
// umask(2) would change it for a moment under other threads).
func currentUmask() int {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return int(n)
				}
			}
		}
	}
	return 0o022
}
