package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

type suiteOptions struct {
	focus, skip string
	procs       int
	repoList    string
}

// specResult is one spec of ginkgo's JSON report.
type specResult struct {
	name  string
	state string // passed, failed, skipped, not run (pending, interrupted, aborted, timedout...)
	msg   string
	took  time.Duration
}

type suiteResult struct {
	specs                    []specResult
	parallelTook, serialTook time.Duration
}

// runSuite runs e2e.test through the ginkgo CLI twice: the specs matching
// focus without the Serial label on procs processes, then those with it
// on one.
func (c *cluster) runSuite(ctx context.Context, o suiteOptions) (*suiteResult, error) {
	res := &suiteResult{}
	for _, part := range []struct {
		name, labels string
		procs        int
		took         *time.Duration
	}{
		{"parallel", "!Serial", o.procs, &res.parallelTook},
		{"serial", "Serial", 1, &res.serialTook},
	} {
		report := c.path("report-" + part.name + ".json")
		args := []string{"--procs", fmt.Sprint(part.procs), "--focus", o.focus, "--label-filter", part.labels,
			"--json-report", report, "--no-color", "--silence-skips", "--timeout", "3h", "--output-interceptor-mode", "none"}
		if o.skip != "" {
			args = append(args, "--skip", o.skip)
		}
		args = append(args, c.bin("e2e.test"), "--",
			"--kubeconfig", c.adminKubeconfig, "--provider", "skeleton", "--kubectl-path", c.bin("kubectl"),
			"--report-dir", c.path("e2e-"+part.name), "--e2e-output-dir", c.path("e2e-"+part.name),
			"--dump-logs-on-failure=false")
		os.MkdirAll(c.path("e2e-"+part.name), 0o755)
		logPath := c.path("e2e-" + part.name + ".log")
		f, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, c.bin("ginkgo"), args...)
		cmd.Dir = c.path("e2e-" + part.name)
		cmd.Env = append(os.Environ(), "KUBE_TEST_REPO_LIST="+o.repoList, "KUBECONFIG="+c.adminKubeconfig)
		cmd.Stdout, cmd.Stderr = f, f
		// On interrupt ginkgo gets SIGINT, so it still writes its report
		// (the specs not run are reported as interrupted).
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 2 * time.Minute
		log.Printf("running the %s specs: ginkgo %s (log %s)", part.name, strings.Join(args, " "), logPath)
		t0 := time.Now()
		err = cmd.Run()
		f.Close()
		*part.took = time.Since(t0)
		specs, rerr := readReport(report)
		if rerr != nil {
			return nil, fmt.Errorf("%s specs: ginkgo: %v; report: %w\n%s", part.name, err, rerr, fileTail(logPath, 40))
		}
		// ginkgo exits non-zero when a spec fails; the report says which.
		if err != nil {
			log.Printf("ginkgo (%s specs) exited: %v", part.name, err)
		}
		res.specs = append(res.specs, specs...)
	}
	return res, nil
}

func fileTail(p string, n int) string {
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readReport reads ginkgo's JSON report: the specs that ran or were
// meant to run. Specs the focus or label filter left out (skipped with no
// failure message) are not listed.
func readReport(path string) ([]specResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var suites []struct {
		SpecReports []struct {
			ContainerHierarchyTexts []string
			LeafNodeText            string
			LeafNodeType            string
			State                   string
			RunTime                 int64
			Failure                 *struct{ Message string }
		}
	}
	if err := json.Unmarshal(b, &suites); err != nil {
		return nil, err
	}
	var out []specResult
	for _, s := range suites {
		for _, r := range s.SpecReports {
			if r.LeafNodeType != "It" {
				continue // suite setup and teardown nodes
			}
			msg := ""
			if r.Failure != nil {
				msg = r.Failure.Message
			}
			if r.State == "skipped" && msg == "" {
				continue // filtered out
			}
			name := strings.TrimSpace(strings.Join(append(append([]string{}, r.ContainerHierarchyTexts...), r.LeafNodeText), " "))
			st := r.State
			switch st {
			case "passed", "failed", "skipped":
			case "panicked", "timedout":
				st = "failed"
			default:
				st = "not run"
			}
			out = append(out, specResult{name: name, state: st, msg: firstLine(msg), took: time.Duration(r.RunTime)})
		}
	}
	return out, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 240 {
		s = s[:240] + "…"
	}
	return s
}

// expectation is a line of the expected-results file.
type expectation struct {
	state, reason string
	line          int
}

// readExpected reads "state | spec name | reason" lines (# comments and
// blank lines ignored): the specs expected not to pass, and why.
func readExpected(path string) (map[string]expectation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("expected results: %w", err)
	}
	defer f.Close()
	m := map[string]expectation{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	ln := 0
	for sc.Scan() {
		ln++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		p := strings.Split(l, " | ")
		if len(p) != 3 || strings.TrimSpace(p[2]) == "" {
			return nil, fmt.Errorf("%s:%d: want \"state | spec name | reason\"", path, ln)
		}
		st := strings.TrimSpace(p[0])
		if st != "failed" && st != "skipped" && st != "not run" {
			return nil, fmt.Errorf("%s:%d: state %q: want failed, skipped or not run", path, ln, st)
		}
		m[strings.TrimSpace(p[1])] = expectation{state: st, reason: strings.TrimSpace(p[2]), line: ln}
	}
	return m, sc.Err()
}

// judge prints the counts and every result that is not a pass, and says
// whether the results are exactly what the expected-results file says:
// every spec that did not pass listed with its state, and every listed
// spec that was selected did not pass.
func (r *suiteResult) judge(expected map[string]expectation, reportPath string) bool {
	counts := map[string]int{}
	ok := true
	seen := map[string]bool{}
	sort.Slice(r.specs, func(i, j int) bool { return r.specs[i].name < r.specs[j].name })
	var rep strings.Builder
	for _, s := range r.specs {
		counts[s.state]++
		seen[s.name] = true
		fmt.Fprintf(&rep, "%s | %s | %.1fs\n", s.state, s.name, s.took.Seconds())
		e, listed := expected[s.name]
		switch {
		case s.state == "passed" && listed:
			fmt.Printf("UNEXPECTED PASS %s (listed as %s at line %d: %s)\n", s.name, e.state, e.line, e.reason)
			ok = false
		case s.state == "passed":
		case !listed:
			fmt.Printf("UNEXPECTED %s %s\n    %s\n", strings.ToUpper(s.state), s.name, s.msg)
			ok = false
		case e.state != s.state:
			fmt.Printf("UNEXPECTED %s %s (listed as %s: %s)\n    %s\n", strings.ToUpper(s.state), s.name, e.state, e.reason, s.msg)
			ok = false
		default:
			fmt.Printf("expected %s: %s (%s)\n", s.state, s.name, e.reason)
		}
	}
	for name, e := range expected {
		if !seen[name] {
			log.Printf("note: %s:%d lists a spec this run did not select: %s", "expected results", e.line, name)
		}
	}
	total := len(r.specs)
	fmt.Printf("\n=== %d specs: %d passed, %d failed, %d skipped, %d not run (parallel %v, serial %v)\n",
		total, counts["passed"], counts["failed"], counts["skipped"], counts["not run"],
		r.parallelTook.Round(time.Second), r.serialTook.Round(time.Second))
	if reportPath != "" {
		if err := os.MkdirAll(filepath.Dir(reportPath), 0o755); err == nil {
			os.WriteFile(reportPath, []byte(rep.String()), 0o644)
		}
	}
	return ok
}
