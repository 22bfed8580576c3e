// Package testutil holds what the tests of several packages share. Only
// tests import it.
package testutil

import (
	"os"
	"testing"
)

// RequiresRoot skips t unless it runs as root, saying why the test needs
// root. CI runs as root, so nothing is skipped there.
func RequiresRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}
