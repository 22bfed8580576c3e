package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzApply feeds arbitrary bytes to Apply as a layer tar. Whatever the
// input, Apply must not panic, must return, and must leave everything
// outside the layer directory as it was: the victims' tree around the
// layer (which relative escapes land in) is snapshotted before and after.
// Absolute symlinks cannot reach it (its path changes per run) but are
// resolved by openat2 RESOLVE_BENEATH like any other; TestApplyRefusesEscapes
// covers them by name. Limits keep each run small: 1 MiB, 256 entries.
//
//	go test -run '^$' -fuzz '^FuzzApply$' -fuzztime 30s -fuzzminimizetime 50x ./runtime/image/unpack
//
// (minimizing an interesting input runs Apply many times; the default 60s
// per input would eat a short fuzz run)
func FuzzApply(f *testing.F) {
	seedV := victims{base: "/seed", layer: "/seed/l1/l2/l3/layer", dir: "/seed/victim", file: "/seed/victimfile", outside: "/seed/l1/l2/l3/outside"}
	for _, tc := range hostileCases() {
		f.Add(buildTar(f, tc.entries(seedV)...))
	}
	f.Add(buildTar(f,
		dir("etc/"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), symlink("bin", "usr/bin"),
		dir("usr/"), dir("usr/bin/"), file("usr/bin/sh", "#!"), hardlink("usr/bin/ash", "usr/bin/sh"),
		file("etc/.wh.gone", ""), file("opt/.wh..wh..opq", ""),
		tent{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3}, tent{name: "run/fifo", typ: tar.TypeFifo},
		tent{name: "x", xattrs: map[string]string{"user.a": "b"}, mode: 0o4755},
		file("zeros", string(make([]byte, 3*holeBlock+7))),
	))
	f.Add(paxSparseTar())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		v := newVictims(t)
		before := snapshot(t, v.base, v.layer)
		opts := Options{NoChown: os.Geteuid() != 0, MaxSize: 1 << 20, MaxEntries: 256}
		// A hang is a bug too: crash, so the fuzzer keeps the input.
		watchdog := time.AfterFunc(20*time.Second, func() { panic("Apply did not return within 20s") })
		_, _ = Apply(context.Background(), v.layer, bytes.NewReader(data), opts)
		watchdog.Stop()
		diffSnapshots(t, before, snapshot(t, v.base, v.layer))
		if got := readFile(t, filepath.Join(v.dir, "sentinel")); got != sentinel {
			t.Fatalf("victim sentinel now %q", got)
		}
	})
}
