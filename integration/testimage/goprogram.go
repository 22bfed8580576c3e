package testimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// SleepySource is the Go source of /usr/local/bin/sleepy in Tools. It prints
//
//	sleepy: args=["a" "b"] uid=0 gid=0
//
// once SIGTERM handling is in place (so a test that has seen that line can
// send SIGTERM without a race), then prints "sleepy: ignoring terminated" for
// every SIGTERM and runs until it is killed with SIGKILL. That makes it the
// program for stop-timeout tests.
const SleepySource = `package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	fmt.Printf("sleepy: args=%q uid=%d gid=%d\n", os.Args[1:], os.Getuid(), os.Getgid())
	for s := range sigs {
		fmt.Printf("sleepy: ignoring %v\n", s)
	}
}
`

// GoProgram compiles src, the source of a main package that uses only the
// standard library, into a static linux/GOARCH binary and returns a layer
// holding it at /usr/local/bin/<name> (mode 0755; /usr, /usr/local and
// /usr/local/bin are in the layer too).
//
// Binaries are cached under os.UserCacheDir()/runclet-testimage, keyed by
// name, source, target and Go version, so only the first run on a host pays
// for the compile. The build never touches the network (GOPROXY=off,
// GOTOOLCHAIN=local).
func GoProgram(name, src string) (v1.Layer, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("testimage.GoProgram: invalid program name %q", name)
	}
	key := programKey(name, src)
	return cached("go:"+key, func() (v1.Layer, error) {
		bin, err := buildGoProgram(name, key, src)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, fmt.Errorf("reading compiled %s: %w", name, err)
		}
		return layerFromFiles([]file{
			dir("usr", 0o755),
			dir("usr/local", 0o755),
			dir("usr/local/bin", 0o755),
			{name: "usr/local/bin/" + name, typ: tar.TypeReg, mode: 0o755, data: data},
		})
	})
}

// GoBinary compiles src like GoProgram and returns the path of the cached
// binary on the host, for tests that want to run or copy it themselves.
func GoBinary(name, src string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return "", fmt.Errorf("testimage.GoBinary: invalid program name %q", name)
	}
	return buildGoProgram(name, programKey(name, src), src)
}

// programKey names a compiled program in the cache. runtime.Version is the
// toolchain this process was built with, normally the same "go" the build
// below runs, so a toolchain upgrade gives new binaries.
func programKey(name, src string) string {
	h := sha256.New()
	for _, s := range []string{name, src, "linux", runtime.GOARCH, runtime.Version()} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return name + "-" + hex.EncodeToString(h.Sum(nil))[:20]
}

// cacheDir returns the directory for compiled programs, creating it.
func cacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		// No $HOME or $XDG_CACHE_HOME (some CI sandboxes): still cache,
		// just per machine boot.
		base = os.TempDir()
	}
	d := filepath.Join(base, "runclet-testimage")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("creating program cache: %w", err)
	}
	return d, nil
}

// buildGoProgram returns the path of the cached binary for key, compiling it
// first if it is not there yet.
func buildGoProgram(name, key, src string) (string, error) {
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, key)
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		return out, nil
	}

	work, err := os.MkdirTemp("", "runclet-goprogram-")
	if err != nil {
		return "", fmt.Errorf("creating build dir for %s: %w", name, err)
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte("module x\n\ngo 1.26\n"), 0o644); err != nil {
		return "", fmt.Errorf("writing go.mod for %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(work, "main.go"), []byte(src), 0o644); err != nil {
		return "", fmt.Errorf("writing source of %s: %w", name, err)
	}

	goTool, err := findGo()
	if err != nil {
		return "", err
	}
	// Build next to the final name and rename, so concurrent test
	// processes never see a half-written binary.
	tmp := filepath.Join(cache, fmt.Sprintf(".%s.%d.tmp", key, os.Getpid()))
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = work
	// Later entries win over inherited ones (os/exec keeps the last).
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0",
		"GOOS=linux",
		"GOARCH="+runtime.GOARCH,
		"GOFLAGS=-mod=mod -buildvcs=false",
		"GO111MODULE=on",
		"GOWORK=off",
		"GOPROXY=off",
		"GOTOOLCHAIN=local",
	)
	if output, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("compiling %s: %w\n%s", name, err, output)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("storing compiled %s: %w", name, err)
	}
	return out, nil
}

// findGo returns the go command. "go test" puts its own GOROOT/bin first in
// PATH; "go run" does not, so fall back to $GOROOT.
func findGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("compiling test programs needs the go command: not found in PATH or $GOROOT/bin")
}

// LinegenSource is a program that writes os.Args[1] numbered lines of
// about 100 bytes ("<n> <padding>") as fast as it can: the load for log
// throughput tests and benchmarks, which share its cached binary.
const LinegenSource = `package main

import (
	"bufio"
	"os"
	"strconv"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	pad := make([]byte, 90)
	for i := range pad {
		pad[i] = 'x'
	}
	w := bufio.NewWriterSize(os.Stdout, 1<<16)
	for i := 0; i < n; i++ {
		w.WriteString(strconv.Itoa(i))
		w.WriteByte(' ')
		w.Write(pad)
		w.WriteByte('\n')
	}
	w.Flush()
}
`
