package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the modification time of every file in every test layer and the
// Created time of every test image config and history entry. A fixed time is
// what makes two builds of the same image byte-identical (same digests), so
// tests can compare digests across builds and processes.
var Epoch = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// file is one entry of a test layer. Names are relative to the root, without
// a leading or trailing slash ("bin/sh", "tmp").
type file struct {
	name     string
	typ      byte // tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink
	mode     int64
	uid, gid int
	data     []byte
	link     string // symlink target, or the archive path a hardlink points to
}

func dir(name string, mode int64) file {
	return file{name: name, typ: tar.TypeDir, mode: mode}
}

func reg(name string, mode int64, data string) file {
	return file{name: name, typ: tar.TypeReg, mode: mode, data: []byte(data)}
}

func symlink(name, target string) file {
	return file{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}

func hardlink(name, target string) file {
	return file{name: name, typ: tar.TypeLink, mode: 0o644, link: target}
}

// tarFiles writes files as an uncompressed tar stream. Entries are sorted by
// name so the output does not depend on the order the caller listed them
// in; a sorted order also puts every directory before its contents.
func tarFiles(w io.Writer, files []file) error {
	sorted := append([]file(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	tw := tar.NewWriter(w)
	for i, f := range sorted {
		if f.name == "" || strings.HasPrefix(f.name, "/") || path.Clean(f.name) != f.name {
			return fmt.Errorf("test layer entry %q: name must be a clean relative path", f.name)
		}
		if i > 0 && sorted[i-1].name == f.name {
			return fmt.Errorf("test layer entry %q: listed twice", f.name)
		}
		hdr := &tar.Header{
			Typeflag: f.typ,
			Name:     f.name,
			Linkname: f.link,
			Mode:     f.mode,
			Uid:      f.uid,
			Gid:      f.gid,
			ModTime:  Epoch,
		}
		switch f.typ {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeReg:
			hdr.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing tar header for %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return fmt.Errorf("writing tar data for %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("closing tar: %w", err)
	}
	return nil
}

// layerFromFiles builds a gzip-compressed OCI layer from files, entirely in
// memory. We compress ourselves instead of letting ggcr do it lazily so the
// compressed bytes (and so the layer digest) are computed exactly once and
// are the same on every call: Go's gzip writer leaves the header's mtime and
// name empty, and compress/flate is deterministic for a given level.
func layerFromFiles(files []file) (v1.Layer, error) {
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return nil, fmt.Errorf("creating gzip writer: %w", err)
	}
	if err := tarFiles(zw, files); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("closing gzip writer: %w", err)
	}
	blob := gz.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("creating layer: %w", err)
	}
	return l, nil
}

// layerCache keeps layers that are expensive to build (the busybox layer,
// compiled Go programs) for the life of the process: many images share them
// and tests build images over and over.
var layerCache struct {
	sync.Mutex
	m map[string]*cachedLayer
}

type cachedLayer struct {
	once  sync.Once
	layer v1.Layer
	err   error
}

// cached returns the layer stored under key, building it with build on first
// use. Concurrent callers for the same key wait for one build; callers for
// different keys build in parallel.
func cached(key string, build func() (v1.Layer, error)) (v1.Layer, error) {
	layerCache.Lock()
	if layerCache.m == nil {
		layerCache.m = map[string]*cachedLayer{}
	}
	c := layerCache.m[key]
	if c == nil {
		c = &cachedLayer{}
		layerCache.m[key] = c
	}
	layerCache.Unlock()
	c.once.Do(func() { c.layer, c.err = build() })
	if c.err != nil {
		// Do not keep failures: the next call may succeed (for example once
		// busybox-static has been installed).
		layerCache.Lock()
		if layerCache.m[key] == c {
			delete(layerCache.m, key)
		}
		layerCache.Unlock()
	}
	return c.layer, c.err
}

// resetCache forgets all cached layers; tests use it to prove that a rebuild
// from scratch yields the same digests.
func resetCache() {
	layerCache.Lock()
	layerCache.m = nil
	layerCache.Unlock()
}
