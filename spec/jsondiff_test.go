package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// jsonDiff compares two JSON documents and returns one line per difference,
// named by its JSON path:
//
//	.process.user.uid: 0 → 33
//	.linux.maskedPaths[11]: + "/proc/foo"
//	.mounts[7]: - {"destination":"/etc/hosts",...}
//
// Arrays are matched by a longest common subsequence of their elements, so
// one entry added to the middle of a list is one line, not a shifted list.
// It exists so golden mismatches and -update rewrites show what changed.
func jsonDiff(oldJSON, newJSON []byte) ([]string, error) {
	var a, b any
	if len(bytes.TrimSpace(oldJSON)) > 0 {
		if err := json.Unmarshal(oldJSON, &a); err != nil {
			return nil, fmt.Errorf("old: %w", err)
		}
	}
	if err := json.Unmarshal(newJSON, &b); err != nil {
		return nil, fmt.Errorf("new: %w", err)
	}
	var out []string
	diffValue(&out, "", a, b)
	if len(out) == 0 && !bytes.Equal(oldJSON, newJSON) {
		// Same values, different bytes: formatting or key order.
		out = append(out, ": same JSON values, different formatting")
	}
	return out, nil
}

// fullJSON is v's compact encoding, the identity used for comparisons.
func fullJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

// compactJSON is v's compact encoding cut for display.
func compactJSON(v any) string {
	const limit = 160
	s := fullJSON(v)
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}

func diffValue(out *[]string, path string, a, b any) {
	switch av := a.(type) {
	case map[string]any:
		if bv, ok := b.(map[string]any); ok {
			diffObject(out, path, av, bv)
			return
		}
	case []any:
		if bv, ok := b.([]any); ok {
			diffArray(out, path, av, bv)
			return
		}
	}
	if fullJSON(a) != fullJSON(b) {
		*out = append(*out, fmt.Sprintf("%s: %s → %s", pathOrRoot(path), compactJSON(a), compactJSON(b)))
	}
}

func pathOrRoot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

func keyPath(path, key string) string {
	for _, r := range key {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return path + "[" + strconv.Quote(key) + "]"
		}
	}
	return path + "." + key
}

func diffObject(out *[]string, path string, a, b map[string]any) {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		av, inA := a[k]
		bv, inB := b[k]
		p := keyPath(path, k)
		switch {
		case !inA:
			*out = append(*out, fmt.Sprintf("%s: + %s", p, compactJSON(bv)))
		case !inB:
			*out = append(*out, fmt.Sprintf("%s: - %s", p, compactJSON(av)))
		default:
			diffValue(out, p, av, bv)
		}
	}
}

// diffArray matches equal elements with an LCS; between two matches, as
// many removed and added elements as pair up are compared field by field
// (a changed mount shows its changed option, not the whole mount twice),
// the rest are listed as removed (old index) or added (new index).
func diffArray(out *[]string, path string, a, b []any) {
	ka := make([]string, len(a))
	for i, v := range a {
		ka[i] = fullJSON(v)
	}
	kb := make([]string, len(b))
	for i, v := range b {
		kb[i] = fullJSON(v)
	}
	// lcs[i][j] is the LCS length of ka[i:] and kb[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if ka[i] == kb[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var delA, addB []int
	flush := func() {
		n := min(len(delA), len(addB))
		for k := range n {
			diffValue(out, fmt.Sprintf("%s[%d]", path, addB[k]), a[delA[k]], b[addB[k]])
		}
		for _, i := range delA[n:] {
			*out = append(*out, fmt.Sprintf("%s[%d]: - %s", path, i, compactJSON(a[i])))
		}
		for _, j := range addB[n:] {
			*out = append(*out, fmt.Sprintf("%s[%d]: + %s", path, j, compactJSON(b[j])))
		}
		delA, addB = delA[:0], addB[:0]
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && ka[i] == kb[j]:
			flush()
			i++
			j++
		case j == len(b) || i < len(a) && lcs[i+1][j] >= lcs[i][j+1]:
			delA = append(delA, i)
			i++
		default:
			addB = append(addB, j)
			j++
		}
	}
	flush()
}

// formatDiff joins diff lines for a test message, keeping at most limit.
func formatDiff(lines []string, limit int) string {
	var b strings.Builder
	for i, l := range lines {
		if i == limit {
			fmt.Fprintf(&b, "  … and %d more\n", len(lines)-limit)
			break
		}
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

func TestJSONDiff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new string
		want     []string
	}{
		{"equal", `{"a":[1,2],"b":{"c":"x"}}`, `{"a":[1,2],"b":{"c":"x"}}`, nil},
		{"scalar changed", `{"process":{"user":{"uid":0}}}`, `{"process":{"user":{"uid":33}}}`,
			[]string{".process.user.uid: 0 → 33"}},
		{"key added and removed", `{"a":1,"b":2}`, `{"a":1,"c":[3]}`,
			[]string{".b: - 2", ".c: + [3]"}},
		{"odd key quoted", `{"annotations":{"io.k8s/x":"a"}}`, `{"annotations":{"io.k8s/x":"b"}}`,
			[]string{`.annotations["io.k8s/x"]: "a" → "b"`}},
		{"inserted in the middle", `{"p":["/a","/b","/d"]}`, `{"p":["/a","/b","/c","/d"]}`,
			[]string{`.p[2]: + "/c"`}},
		{"removed from the front", `{"p":["/a","/b","/c"]}`, `{"p":["/b","/c"]}`,
			[]string{`.p[0]: - "/a"`}},
		{"element changed field by field", `{"mounts":[{"d":"/proc"},{"d":"/sys","o":["nosuid","ro"]}]}`,
			`{"mounts":[{"d":"/proc"},{"d":"/sys","o":["nosuid","rw"]}]}`,
			[]string{`.mounts[1].o[1]: "ro" → "rw"`}},
		{"long arrays differing after the display cut", `{"n":["` + strings.Repeat("a", 200) + `","x"]}`,
			`{"n":["` + strings.Repeat("a", 200) + `","x","y"]}`, []string{`.n[2]: + "y"`}},
		{"type changed", `{"a":[1]}`, `{"a":{"x":1}}`, []string{`.a: [1] → {"x":1}`}},
		{"no old file", ``, `{"a":1}`, []string{`.: null → {"a":1}`}},
		{"formatting only", `{"a":1}`, "{\n  \"a\": 1\n}", []string{": same JSON values, different formatting"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := jsonDiff([]byte(tc.old), []byte(tc.new))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("jsonDiff:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
