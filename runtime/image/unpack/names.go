package unpack

import (
	"path"
	"strings"
)

const (
	whiteoutPrefix = ".wh."
	// whiteoutMeta prefixes names that are metadata of the layer format
	// (AUFS hardlink dirs and the like), never files of the image.
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// cleanName turns a tar name into a clean path relative to the layer root,
// or returns why it cannot be one. Absolute names are taken as relative to
// the root, as every layer tool does; ".." that climbs above the root is a
// refusal, not something to clamp. The root itself is ".".
func cleanName(name string) (string, string) {
	if name == "" {
		return "", "empty name"
	}
	// Strip "/" and "./" up front: path.Clean would have to allocate to
	// drop them, and most layers prefix every name with one of them.
	for {
		if strings.HasPrefix(name, "/") {
			name = name[1:]
		} else if strings.HasPrefix(name, "./") {
			name = name[2:]
		} else {
			break
		}
	}
	if name == "" {
		return ".", ""
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", "path traversal"
	}
	return c, ""
}

// splitName splits a cleaned name into its parent ("" for the root) and
// final component.
func splitName(name string) (dir, base string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

// isFormatMeta reports whether any component of a cleaned name is layer
// format metadata (".wh..wh.*") other than the opaque marker, which the
// caller handles first.
func isFormatMeta(name string) bool {
	return strings.HasPrefix(name, whiteoutMeta) || strings.Contains(name, "/"+whiteoutMeta)
}
