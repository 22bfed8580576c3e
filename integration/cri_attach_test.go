package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// crictl attach -i: kubectl attach's path through the CRI Attach RPC and
// the streaming server (SPDY) to the supervisor's attach. The container
// echoes what it reads; stdin_once closes its stdin when the attach ends,
// so it says bye and exits, which ends the attach.
func TestCRICrictlAttach(t *testing.T) {
	ci := newCRIInstance(t)
	crictl := crictlBin(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	dir := t.TempDir()
	base := []string{"--runtime-endpoint", "unix://" + ci.sock, "--image-endpoint", "unix://" + ci.sock, "--timeout", "60s"}
	run := func(stdin string, args ...string) (string, string, error) {
		cmd := exec.Command(crictl, append(base, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, err := run("", args...)
		if err != nil {
			t.Fatalf("crictl %v: %v\n%s%s", args, err, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	podJSON := filepath.Join(dir, "pod.json")
	os.WriteFile(podJSON, []byte(fmt.Sprintf(`{"metadata": {"name": "attach-pod", "namespace": "default", "uid": "attach-uid"},
  "log_directory": %q, "linux": {}}`, filepath.Join(ci.logs, "attach-pod"))), 0o644)
	ctrJSON := filepath.Join(dir, "ctr.json")
	os.WriteFile(ctrJSON, []byte(fmt.Sprintf(`{"metadata": {"name": "echo"}, "image": {"image": %q},
  "command": ["sh", "-c", "while read l; do echo got:$l; echo err:$l >&2; done; echo bye"],
  "stdin": true, "stdin_once": true, "log_path": "echo/0.log", "linux": {}}`, ref)), 0o644)
	must("pull", ref)
	podID := must("runp", podJSON)
	ctrID := must("create", podID, ctrJSON, podJSON)
	must("start", ctrID)

	t0 := time.Now()
	out, errOut, err := run("hello\nworld\n", "attach", "-i", ctrID)
	if err != nil {
		t.Fatalf("attach: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	t.Logf("crictl attach -i: %v", time.Since(t0).Round(time.Millisecond))
	if out != "got:hello\ngot:world\nbye\n" {
		t.Fatalf("attach stdout %q (stderr %q)", out, errOut)
	}
	if !strings.Contains(errOut, "err:hello\nerr:world\n") {
		t.Fatalf("attach stderr %q", errOut)
	}
	// The app saw the end of its stdin and exited 0; its log has it all.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(must("inspect", ctrID), `"state": "CONTAINER_EXITED"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the container did not exit after its stdin closed:\n%s", must("inspect", ctrID))
		}
		time.Sleep(50 * time.Millisecond)
	}
	ci.waitLog(filepath.Join(ci.logs, "attach-pod", "echo", "0.log"), "stdout F got:hello", "stderr F err:world", "stdout F bye")
	// Attaching to an exited container is refused.
	if _, _, err := run("", "attach", ctrID); err == nil {
		t.Fatal("attach to an exited container succeeded")
	}
	must("stopp", podID)
	must("rmp", podID)
	ci.stopDaemon()
	ci.checkNoMounts()
}
