package main

import (
	"strings"
	"testing"
)

// A stream as `go test -json` writes it: one pass, one failure, one listed
// skip and one unlisted skip.
const stream = `{"Action":"run","Package":"example.com/a","Test":"TestOK"}
{"Action":"output","Package":"example.com/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"example.com/a","Test":"TestOK"}
{"Action":"output","Package":"example.com/a","Test":"TestBad","Output":"    a_test.go:9: got 1, want 2\n"}
{"Action":"fail","Package":"example.com/a","Test":"TestBad"}
{"Action":"output","Package":"example.com/a","Test":"TestListed","Output":"=== RUN   TestListed\n"}
{"Action":"output","Package":"example.com/a","Test":"TestListed","Output":"    a_test.go:12: no /dev/full\n"}
{"Action":"output","Package":"example.com/a","Test":"TestListed","Output":"--- SKIP: TestListed (0.00s)\n"}
{"Action":"skip","Package":"example.com/a","Test":"TestListed"}
{"Action":"output","Package":"example.com/a","Test":"TestHidden","Output":"    a_test.go:20: needs iptables\n"}
{"Action":"skip","Package":"example.com/a","Test":"TestHidden"}
{"Action":"output","Package":"example.com/a","Output":"FAIL\texample.com/a\t0.1s\n"}
{"Action":"fail","Package":"example.com/a"}
go: downloading something
`

func TestConsumeCountsAndFlagsUnlistedSkips(t *testing.T) {
	allow, err := parseAllowList("# comment\nexample.com/a\tTestListed\tthe CI machine has no /dev/full\n")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	s, err := consume(strings.NewReader(stream), &out, allow)
	if err != nil {
		t.Fatal(err)
	}
	if s.passed != 1 || s.failed != 1 || s.skipped != 2 {
		t.Fatalf("passed %d failed %d skipped %d, want 1 1 2", s.passed, s.failed, s.skipped)
	}
	if len(s.unlisted) != 1 || s.unlisted[0] != "example.com/a TestHidden: a_test.go:20: needs iptables" {
		t.Fatalf("unlisted %q", s.unlisted)
	}
	if len(s.failedPkgs) != 1 || s.failedPkgs[0] != "example.com/a" {
		t.Fatalf("failed packages %q", s.failedPkgs)
	}
	for _, want := range []string{"got 1, want 2", "FAIL\texample.com/a", "go: downloading something"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "=== RUN   TestOK") {
		t.Errorf("output of a passing test printed:\n%s", out.String())
	}
}

func TestAllowListNeedsAReason(t *testing.T) {
	if _, err := parseAllowList("example.com/a\tTestX\t \n"); err == nil {
		t.Fatal("an entry without a reason was accepted")
	}
}
