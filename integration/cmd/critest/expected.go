package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// expectedText lists the only acceptable non-passes, each with its reason.
//
//go:embed expected.txt
var expectedText string

type expectation struct{ kind, text, why string }

func expectations() ([]expectation, error) {
	var out []expectation
	for n, line := range strings.Split(expectedText, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 || (f[0] != "fail" && f[0] != "skip") || f[1] == "" || f[2] == "" {
			return nil, fmt.Errorf("expected.txt:%d: want \"fail|skip<TAB>text<TAB>why\", got %q", n+1, line)
		}
		out = append(out, expectation{f[0], f[1], f[2]})
	}
	return out, nil
}

func (e expectation) matches(kind, name, msg string) bool {
	return e.kind == kind && (strings.Contains(name, e.text) || strings.Contains(msg, e.text))
}

// specReport is the part of ginkgo's JSON report that is summarized.
type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
	NumAttempts             int
	Failure                 struct{ Message string }
}

// summarize prints the counts and every spec that did not pass, and fails
// when one did so unexpectedly: a failure not listed as expected, or a
// skip for a reason not listed (a skip is not a pass), or when fewer than
// minRun specs ran. An expected failure that passed is reported so the
// list can shrink.
func summarize(path string, minRun int) error {
	exp, err := expectations()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading ginkgo report: %w", err)
	}
	var suites []struct{ SpecReports []specReport }
	if err := json.Unmarshal(b, &suites); err != nil {
		return fmt.Errorf("parsing ginkgo report: %w", err)
	}
	counts := map[string]int{}
	var unexpected, expected []string
	for _, s := range suites {
		for _, r := range s.SpecReports {
			name := strings.Join(append(r.ContainerHierarchyTexts, r.LeafNodeText), " ")
			msg := r.Failure.Message
			if r.LeafNodeType != "It" {
				if r.State != "passed" {
					unexpected = append(unexpected, fmt.Sprintf("[%s %s] %s", r.LeafNodeType, r.State, firstLine(msg)))
				}
				continue
			}
			if r.State == "skipped" && r.NumAttempts == 0 {
				counts["not selected"]++ // filtered out by -focus/-skip (or critest's own benchmark filter)
				continue
			}
			counts[r.State]++
			kind := "fail"
			switch r.State {
			case "passed":
				for _, e := range exp {
					if e.matches("fail", name, "") {
						fmt.Printf("NOW PASSES (drop it from expected.txt): %s\n", name)
					}
				}
				continue
			case "skipped", "pending":
				kind = "skip"
			}
			line := fmt.Sprintf("%s %s: %s", strings.ToUpper(kind), name, firstLine(msg))
			why := ""
			for _, e := range exp {
				if e.matches(kind, name, msg) {
					why = e.why
					break
				}
			}
			if why == "" {
				unexpected = append(unexpected, line)
			} else if kind == "fail" {
				expected = append(expected, line+" [expected: "+why+"]")
			}
		}
	}
	fmt.Printf("passed %d, failed %d, skipped %d, not selected %d (all: %v)\n",
		counts["passed"], counts["failed"], counts["skipped"], counts["not selected"], counts)
	for _, l := range expected {
		fmt.Println(l)
	}
	for _, l := range unexpected {
		fmt.Println("UNEXPECTED", l)
	}
	if len(unexpected) > 0 {
		return fmt.Errorf("%d unexpected results (failures, or skips not listed in expected.txt)", len(unexpected))
	}
	if ran := counts["passed"] + counts["failed"]; ran < minRun {
		return fmt.Errorf("only %d specs ran, this pass must run at least %d (did the focus or the suite change?)", ran, minRun)
	}
	return nil
}
