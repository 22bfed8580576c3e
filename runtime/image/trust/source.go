package trust

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/BurntSushi/toml"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/internal/fsutil"
	"github.com/runclet/runclet/runtime/config"
)

// Source is the live policy: the configuration's trust block plus the
// policy file, re-read when the file changes (its mtime, size or inode),
// so a running daemon follows `runclet trust add` without a restart. A
// file that fails to parse after a good one keeps the last good policy
// (logged); one that never parsed fails every check.
type Source struct {
	cfg  config.Trust
	path string

	mu     sync.Mutex
	stat   os.FileInfo
	policy *Policy
	err    error
}

// NewSource makes the live policy of cfg with its policy file at path.
func NewSource(cfg config.Trust, path string) *Source {
	return &Source{cfg: cfg, path: path}
}

// Path is the policy file.
func (s *Source) Path() string { return s.path }

// Policy returns the policy in force, re-reading the file if it changed.
func (s *Source) Policy() (*Policy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("trust policy: %w", err)
	}
	if s.policy != nil || s.err != nil {
		if sameFile(st, s.stat) {
			return s.policy, s.err
		}
	}
	p, err := s.load()
	s.stat = st
	if err != nil {
		if s.policy != nil {
			slog.Error("trust policy file does not parse; keeping the policy read before", "file", s.path, "err", err)
			return s.policy, nil
		}
		s.err = err
		return nil, err
	}
	if s.policy != nil {
		slog.Info("trust policy reloaded", "file", s.path, "rules", len(p.Rules))
	}
	s.policy, s.err = p, nil
	return p, nil
}

func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

func (s *Source) load() (*Policy, error) {
	f, err := ReadFile(s.path)
	if err != nil {
		return nil, err
	}
	def := s.cfg.Default
	if f.Default != "" {
		def = f.Default
	}
	return Build(def, filepath.Dir(s.path),
		RuleSource{Name: "the configuration's [trust] block", Rules: s.cfg.Rules},
		RuleSource{Name: s.path, Rules: f.Rules})
}

// ReadFile reads a policy file; a missing one is empty.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &File{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust policy: %w", err)
	}
	return ParseFile(data, path)
}

// Edit changes the policy file under a lock: fn edits the parsed file,
// which is then validated together with cfg's rules and written
// atomically. fn's error aborts with no write.
func Edit(cfg config.Trust, path string, fn func(f *File) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("trust policy: %w", err)
	}
	lock, err := fsutil.LockFile(path+".lock", false)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	f, err := ReadFile(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		return err
	}
	def := cfg.Default
	if f.Default != "" {
		def = f.Default
	}
	if _, err := Build(def, filepath.Dir(path), RuleSource{Name: "the configuration", Rules: cfg.Rules}, RuleSource{Name: path, Rules: f.Rules}); err != nil {
		return err
	}
	data, err := marshalFile(f)
	if err != nil {
		return err
	}
	// Readable by all: it names public keys only, and `runclet trust ls`
	// should work for anyone who can read the configuration.
	return fsutil.WriteFileAtomic(path, data, 0o644)
}

const fileHeader = `# runclet image trust policy, written by ` + "`runclet trust add|rm`" + `; hand edits
# are kept. Rules here come on top of the configuration's [trust] block
# (an equal prefix here wins); the longest matching prefix decides. See
# docs/images.md, "Trust and signatures".

`

func marshalFile(f *File) ([]byte, error) {
	var buf []byte
	w := &byteWriter{b: &buf}
	if _, err := w.Write([]byte(fileHeader)); err != nil {
		return nil, err
	}
	if err := toml.NewEncoder(w).Encode(f); err != nil {
		return nil, fmt.Errorf("trust policy: %w", err)
	}
	return buf, nil
}

type byteWriter struct{ b *[]byte }

func (w *byteWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

// AddRule adds r to the file, replacing a rule with the same prefix.
func AddRule(f *File, r config.TrustRule) {
	r.Prefix = NormalizePrefix(r.Prefix)
	f.Rules = slices.DeleteFunc(f.Rules, func(o config.TrustRule) bool { return NormalizePrefix(o.Prefix) == r.Prefix })
	f.Rules = append(f.Rules, r)
}

// RemoveRule removes the file's rule for prefix; NotFound if it has none.
func RemoveRule(f *File, prefix string) error {
	p := NormalizePrefix(prefix)
	n := len(f.Rules)
	f.Rules = slices.DeleteFunc(f.Rules, func(o config.TrustRule) bool { return NormalizePrefix(o.Prefix) == p })
	if len(f.Rules) == n {
		return errdefs.NotFound("the trust policy file has no rule for %s", p)
	}
	return nil
}
