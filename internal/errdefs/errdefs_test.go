package errdefs

import (
	"errors"
	"io/fs"
	"testing"
)

func TestClassAndCauseBothFound(t *testing.T) {
	err := NotFound("image %q: %w", "busybox", fs.ErrNotExist)
	if err.Error() != `image "busybox": file does not exist` {
		t.Fatalf("message = %q", err.Error())
	}
	if !IsNotFound(err) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("class or cause lost: %v", err)
	}
	if IsAlreadyExists(err) {
		t.Fatal("wrong class matched")
	}
}
