package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestCLIListOutputsAndFilters: every list takes -q, -o
// table|wide|json|yaml, --format and --filter.
func TestCLIListOutputsAndFilters(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	web := lastLine(pi.run("run", "-d", "--name", "web1", "-l", "tier=web", img, "--", "sleep", "300"))
	db := lastLine(pi.run("run", "-d", "--name", "db1", "-l", "tier=db", img, "--", "sleep", "300"))
	done := lastLine(pi.run("run", "-d", "--name", "batch1", img, "--", "true"))
	pi.waitApp(done, "busybox")
	// The pod itself is recorded exited by its exit command, just after.
	for i := 0; pi.status(done).State != "exited"; i++ {
		if i == 100 {
			t.Fatalf("pod %s never exited", done)
		}
		time.Sleep(100 * time.Millisecond)
	}

	lines := func(s string) []string {
		out := strings.Fields(s)
		sort.Strings(out)
		return out
	}
	sorted := func(ids ...string) []string { sort.Strings(ids); return ids }
	check := func(want []string, args ...string) {
		t.Helper()
		if got := lines(pi.run(args...)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("runclet %v: %q, want %q", args, got, want)
		}
	}
	check(sorted(web, db, done), "list", "-q")
	check([]string{web}, "list", "-q", "--filter", "label=tier=web")
	check(sorted(web, db), "list", "-q", "--filter", "label=tier")
	check(sorted(web, db), "list", "-q", "--filter", "state=ready")
	check([]string{done}, "list", "-q", "--filter", "state=exited")
	check(sorted(web, db), "list", "-q", "-f", "name=web*", "-f", "name=db1")     // one key: or
	check([]string{db}, "list", "-q", "-f", "state=ready", "-f", "label=tier=db") // two keys: and
	check(sorted(web, db, done), "list", "-q", "--filter", "image="+img)
	check([]string{"db1:ready", "web1:ready"}, "list", "--filter", "state=ready", "--format", "{{.Name}}:{{.State}}")

	if out := pi.run("list", "-o", "wide", "--filter", "name=web1"); !strings.Contains(out, web) || !strings.Contains(out, "tier=web") || !strings.Contains(out, "LABELS") {
		t.Errorf("list -o wide: %q", out)
	}
	if out := pi.run("list", "-o", "yaml", "--filter", "name=web1"); !strings.Contains(out, "- apps:") || !strings.Contains(out, "name: web1") {
		t.Errorf("list -o yaml: %q", out)
	}
	var views []map[string]any
	if err := json.Unmarshal([]byte(pi.run("list", "-o", "json", "-f", "name=db1")), &views); err != nil || len(views) != 1 || views[0]["id"] != db {
		t.Errorf("list -o json: %v %v", err, views)
	}
	if out := pi.run("list", "--format", "{{json .Labels}}", "-f", "name=db1"); out != `{"tier":"db"}`+"\n" {
		t.Errorf("--format json: %q", out)
	}
	for _, bad := range [][]string{{"list", "--filter", "colour=red"}, {"list", "-o", "xml"}, {"list", "--format", "{{.Nope"}} {
		if _, stderr, err := pi.try(bad...); exitCodeOf(t, err) != 125 || stderr == "" {
			t.Errorf("runclet %v: %v %q", bad, err, stderr)
		}
	}

	// app list and image ls take the same flags.
	check([]string{pi.status(web).Apps[0].ID}, "app", "list", "web1", "-q", "--filter", "state=running")
	if out := pi.run("app", "list", "batch1", "--format", "{{.Name}} {{.ExitCode}}"); out != "busybox 0\n" {
		t.Errorf("app list --format: %q", out)
	}
	ids := lines(pi.run("image", "ls", "-q"))
	if len(ids) != 1 || len(ids[0]) != 64 {
		t.Fatalf("image ls -q: %q", ids)
	}
	check(ids, "image", "ls", "-q", "--filter", "reference=*busybox*")
	check(nil, "image", "ls", "-q", "--filter", "dangling=true")
	if out := pi.run("image", "ls", "--format", "{{.ID}}"); out != "sha256:"+ids[0]+"\n" {
		t.Errorf("image ls --format: %q", out)
	}
}

// TestCLICompletion: the shells' completion scripts exist, and the
// dynamic completion offers the pods, apps, images and flag values there
// are.
func TestCLICompletion(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	pi.run("run", "-d", "--name", "compl", "--app-name", "worker", img, "--", "sleep", "300")
	complete := func(args ...string) string {
		t.Helper()
		return pi.run(append([]string{"__complete"}, args...)...)
	}
	if out := complete("exec", "co"); !strings.Contains(out, "compl\tready pod") || !strings.HasSuffix(out, ":4\n") {
		t.Errorf("pod completion: %q", out)
	}
	if out := complete("logs", "compl", ""); !strings.Contains(out, "worker\trunning app of") {
		t.Errorf("app completion: %q", out)
	}
	if out := complete("image", "rm", ""); !strings.Contains(out, img) {
		t.Errorf("image completion: %q", out)
	}
	if out := complete("run", "--stage1", ""); !strings.Contains(out, "runc\nfly\n") {
		t.Errorf("flag value completion: %q", out)
	}
	if out := complete("list", "--filter", ""); !strings.Contains(out, "state=\n") {
		t.Errorf("filter completion: %q", out)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		script := pi.run("completion", sh)
		if !strings.Contains(script, "__complete") {
			t.Errorf("completion %s: no dynamic completion in the script", sh)
		}
	}
	// bash really loads the script and completes a pod name with it (the
	// script needs the bash-completion package's helpers).
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Logf("not trying the script in bash: %s is not installed (apt package bash-completion)", bashCompletion)
	} else {
		dir := t.TempDir()
		script := filepath.Join(dir, "runclet.bash")
		os.WriteFile(script, []byte(pi.run("completion", "bash")), 0o644)
		wrapper := filepath.Join(dir, "runclet")
		os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+runcletBin+" --config "+pi.config+" --root "+pi.root+" --run-root "+pi.runRoot+` "$@"`+"\n"), 0o755)
		cmd := exec.Command("bash", "-c", `source `+bashCompletion+` && source `+script+` && COMP_WORDS=(runclet status co) COMP_CWORD=2 COMP_LINE="runclet status co" COMP_POINT=17 && __start_runclet runclet && printf '%s\n' "${COMPREPLY[@]}"`)
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "compl") {
			t.Errorf("bash completion: %v %q", err, out)
		}
	}
}
