// Command gotest runs `go test -json` with the given arguments, prints what
// a person needs from it (the output of failed and skipped tests, each
// package's result line) and, when -strict (or CI=true), fails on any skip
// that the allow-list does not name with a reason. A skip hides a test that
// did not run; in CI, where everything can run as root, it is a failure.
//
//	go run ./integration/cmd/gotest -allow integration/scripts/skips-allowed.txt -- -count=1 ./...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output and build-fail events
	Test       string
	Output     string
}

// allowed is one allow-list entry: a skip of Test in Package is accepted
// for Why.
type allowed struct{ pkg, test, why string }

func parseAllowList(text string) ([]allowed, error) {
	var out []allowed
	for n, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 || f[0] == "" || f[1] == "" || strings.TrimSpace(f[2]) == "" {
			return nil, fmt.Errorf("allow-list line %d: want \"package<TAB>test<TAB>reason\", got %q", n+1, line)
		}
		out = append(out, allowed{f[0], f[1], f[2]})
	}
	return out, nil
}

// summary collects the outcome of a run from its events.
type summary struct {
	passed, failed, skipped int
	skips                   []string // "package test: reason"
	unlisted                []string // skips the allow-list does not name
	failedPkgs              []string
}

// consume reads events and writes the human part of the output to w.
func consume(r io.Reader, w io.Writer, allow []allowed) (*summary, error) {
	s := &summary{}
	outputs := map[string][]string{} // package+test → its output lines so far
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// Not an event (go vet or the toolchain talking): pass it on.
			fmt.Fprintf(w, "%s\n", line)
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "build-output":
			fmt.Fprint(w, e.Output)
		case "output":
			if e.Test == "" {
				// Package lines: "ok", "FAIL", panics outside a test, coverage.
				if !strings.HasPrefix(e.Output, "=== ") && e.Output != "PASS\n" {
					fmt.Fprint(w, e.Output)
				}
				continue
			}
			outputs[key] = append(outputs[key], e.Output)
		case "pass":
			if e.Test != "" {
				s.passed++
				delete(outputs, key)
			}
		case "fail":
			if e.Test == "" {
				s.failedPkgs = append(s.failedPkgs, e.Package)
				continue
			}
			s.failed++
			fmt.Fprint(w, strings.Join(outputs[key], ""))
			delete(outputs, key)
		case "skip":
			if e.Test == "" {
				continue // a package without tests
			}
			s.skipped++
			reason := skipReason(outputs[key])
			entry := fmt.Sprintf("%s %s: %s", e.Package, e.Test, reason)
			s.skips = append(s.skips, entry)
			if !isAllowed(allow, e.Package, e.Test) {
				s.unlisted = append(s.unlisted, entry)
			}
			delete(outputs, key)
		}
	}
	return s, sc.Err()
}

// skipReason is the message t.Skip printed: the output lines after
// "--- SKIP", or the last lines before it.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msg, " / ")
}

func isAllowed(allow []allowed, pkg, test string) bool {
	for _, a := range allow {
		if (a.pkg == pkg || strings.HasSuffix(pkg, "/"+a.pkg)) && a.test == test {
			return true
		}
	}
	return false
}

func main() {
	allowPath := flag.String("allow", "", "allow-list of skips: package<TAB>test<TAB>reason per line")
	strict := flag.Bool("strict", os.Getenv("CI") == "true", "fail on any skip not in the allow-list (default: when CI=true)")
	flag.Parse()
	if err := run(*allowPath, *strict, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "gotest:", err)
		os.Exit(1)
	}
}

func run(allowPath string, strict bool, args []string) error {
	var allow []allowed
	if allowPath != "" {
		b, err := os.ReadFile(allowPath)
		if err != nil {
			return err
		}
		if allow, err = parseAllowList(string(b)); err != nil {
			return err
		}
	}
	cmd := exec.Command("go", append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s, readErr := consume(out, os.Stdout, allow)
	waitErr := cmd.Wait()
	if readErr != nil {
		return readErr
	}
	sort.Strings(s.skips)
	if len(s.skips) > 0 {
		fmt.Println("\nskipped tests:")
		for _, l := range s.skips {
			fmt.Println("  " + l)
		}
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
	var errs []error
	if waitErr != nil {
		errs = append(errs, fmt.Errorf("go test: %w (failed packages: %s)", waitErr, strings.Join(s.failedPkgs, " ")))
	}
	if strict && len(s.unlisted) > 0 {
		errs = append(errs, fmt.Errorf("%d skipped tests are not in the allow-list %s (in CI a skip is a test that did not run):\n  %s",
			len(s.unlisted), allowPath, strings.Join(s.unlisted, "\n  ")))
	}
	return errors.Join(errs...)
}
