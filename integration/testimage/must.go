package testimage

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Must returns v, or panics if err is not nil. For package-level variables
// and TestMain; inside a test prefer the Must* helpers, which fail the test
// instead of crashing the test binary.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func must[T any](t testing.TB, what string, f func() (T, error)) T {
	t.Helper()
	v, err := f()
	if err != nil {
		t.Fatalf("testimage.%s: %v", what, err)
	}
	return v
}

// MustBusybox is Busybox for tests: it fails t on error.
func MustBusybox(t testing.TB) v1.Image { t.Helper(); return must(t, "Busybox", Busybox) }

// MustMultiLayer is MultiLayer for tests: it fails t on error.
func MustMultiLayer(t testing.TB) v1.Image { t.Helper(); return must(t, "MultiLayer", MultiLayer) }

// MustWhiteouts is Whiteouts for tests: it fails t on error.
func MustWhiteouts(t testing.TB) v1.Image { t.Helper(); return must(t, "Whiteouts", Whiteouts) }

// MustTools is Tools for tests: it fails t on error.
func MustTools(t testing.TB) v1.Image { t.Helper(); return must(t, "Tools", Tools) }

// MustIndex is Index for tests: it fails t on error.
func MustIndex(t testing.TB) v1.ImageIndex { t.Helper(); return must(t, "Index", Index) }

// MustWithUser is WithUser for tests: it fails t on error.
func MustWithUser(t testing.TB, base v1.Image, user string) v1.Image {
	t.Helper()
	return must(t, "WithUser", func() (v1.Image, error) { return WithUser(base, user) })
}
