// Package unpack extracts one OCI image layer into a directory of its own.
//
// runclet unpacks every layer once, into a directory keyed by its chain ID,
// and shares those directories between pods as overlayfs lower dirs. A layer
// directory therefore has to be in overlayfs' on-disk format rather than the
// OCI tar format: a whiteout entry `dir/.wh.NAME` becomes a 0:0 character
// device `dir/NAME`, and an opaque marker `dir/.wh..wh..opq` becomes the
// `trusted.overlay.opaque=y` xattr on `dir`. Nothing is merged here; the
// kernel does that when the lowers are stacked.
//
// Layer tarballs come from registries, i.e. from strangers, and extraction
// runs as root. The package's job is to make sure nothing is ever created,
// written, linked or chmod'ed outside the layer directory. Entries that try
// (`../` names, writes through a symlink that leads out, hardlinks to
// outside files) are refused with an *EscapeError rather than silently
// rewritten: a layer that does this is broken or hostile, and quietly
// extracting "something else" would hide that from the operator and produce
// a root filesystem nobody asked for.
//
// Paths are resolved by the kernel, not by string manipulation: each entry's
// parent directory is opened with openat2(2) and RESOLVE_BENEATH relative to
// a file descriptor of the layer root, so an absolute or climbing symlink
// planted by an earlier entry fails with EXDEV instead of being followed.
// The final component is then created with *at system calls on that parent
// descriptor with O_EXCL / O_NOFOLLOW semantics, so what was checked is what
// is written to. Symlink targets themselves are stored verbatim: absolute
// symlinks are normal in images and only matter if followed, which never
// happens during extraction.
//
// Apply reads its input to EOF, including the padding after the tar
// end-of-archive marker, so a caller that hashes the stream while it is
// being extracted verifies the complete blob.
package unpack
