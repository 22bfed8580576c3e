package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A ginkgo JSON report with a filtered spec (skipped, no message), a
// runtime skip, a pass, a failure, a timeout and an interrupted spec.
const reportJSON = `[{"SpecReports":[
 {"LeafNodeType":"BeforeSuite","State":"passed"},
 {"ContainerHierarchyTexts":["[sig-node] A"],"LeafNodeText":"filtered","LeafNodeType":"It","State":"skipped"},
 {"ContainerHierarchyTexts":["[sig-node] A"],"LeafNodeText":"skips itself","LeafNodeType":"It","State":"skipped","Failure":{"Message":"needs a GPU\nmore"}},
 {"ContainerHierarchyTexts":["[sig-node] A"],"LeafNodeText":"passes [Conformance]","LeafNodeType":"It","State":"passed","RunTime":2000000000},
 {"ContainerHierarchyTexts":["[sig-node] B"],"LeafNodeText":"fails","LeafNodeType":"It","State":"failed","Failure":{"Message":"boom"}},
 {"ContainerHierarchyTexts":["[sig-node] B"],"LeafNodeText":"times out","LeafNodeType":"It","State":"timedout","Failure":{"Message":"late"}},
 {"ContainerHierarchyTexts":["[sig-node] B"],"LeafNodeText":"interrupted","LeafNodeType":"It","State":"interrupted","Failure":{"Message":"interrupted by user"}}
]}]`

func write(t *testing.T, name, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadReport(t *testing.T) {
	specs, err := readReport(write(t, "r.json", reportJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"[sig-node] A skips itself":         "skipped",
		"[sig-node] A passes [Conformance]": "passed",
		"[sig-node] B fails":                "failed",
		"[sig-node] B times out":            "failed",
		"[sig-node] B interrupted":          "not run",
	}
	if len(specs) != len(want) {
		t.Fatalf("got %d specs, want %d (filtered and suite nodes left out): %+v", len(specs), len(want), specs)
	}
	for _, s := range specs {
		if want[s.name] != s.state {
			t.Errorf("%q: state %q, want %q", s.name, s.state, want[s.name])
		}
	}
}

func TestJudge(t *testing.T) {
	specs, err := readReport(write(t, "r.json", reportJSON))
	if err != nil {
		t.Fatal(err)
	}
	all := `# comment
skipped | [sig-node] A skips itself | no GPU here
failed | [sig-node] B fails | known
failed | [sig-node] B times out | known
not run | [sig-node] B interrupted | known
`
	for _, tc := range []struct {
		name, expected string
		ok             bool
	}{
		{"every non-pass listed with its state", all, true},
		{"an unlisted failure", "skipped | [sig-node] A skips itself | x\nfailed | [sig-node] B times out | x\nnot run | [sig-node] B interrupted | x\n", false},
		{"a listed spec that passes", all + "failed | [sig-node] A passes [Conformance] | was broken\n", false},
		{"listed with another state", "skipped | [sig-node] A skips itself | x\nskipped | [sig-node] B fails | x\nfailed | [sig-node] B times out | x\nnot run | [sig-node] B interrupted | x\n", false},
	} {
		exp, err := readExpected(write(t, "e.txt", tc.expected))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r := &suiteResult{specs: append([]specResult(nil), specs...)}
		if got := r.judge(exp, ""); got != tc.ok {
			t.Errorf("%s: judge = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestReadExpectedRefusesBadLines(t *testing.T) {
	for _, l := range []string{"failed | name", "passed | name | reason", "failed | name |  "} {
		if _, err := readExpected(write(t, "e.txt", l+"\n")); err == nil {
			t.Errorf("%q accepted", l)
		}
	}
}

// The file in the repository parses.
func TestExpectedResultsFile(t *testing.T) {
	exp, err := readExpected("expected-results.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(exp) == 0 {
		t.Fatal("no entries")
	}
}
