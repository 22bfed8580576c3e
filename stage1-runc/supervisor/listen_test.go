package supervisor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/runclet/runclet/internal/testutil"
	"github.com/runclet/runclet/stage1-runc/proto"

	"golang.org/x/sys/unix"
)

// The control socket is born with the umask's mode, so the run dir it is
// born in must already be root's alone, even one an older stage0 made
// 0711; the socket ends up 0600.
func TestListenSocketPrivateFromBirth(t *testing.T) {
	testutil.RequiresRoot(t, "the supervisor runs as root")
	old := unix.Umask(0) // the worst umask: the socket is born 0777
	defer unix.Umask(old)
	base := t.TempDir()
	os.Chmod(base, 0o755)
	dir := filepath.Join(base, "pod")
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	s := &supervisor{opts: proto.SuperviseArgs{RunDir: dir}}
	ln, err := s.listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, proto.SocketPath(dir): 0o600} {
		st, err := os.Lstat(path)
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (%v)", path, st.Mode().Perm(), want, err)
		}
	}
}
