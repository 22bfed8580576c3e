package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// logFiles lists a container's log files in write order: rotated ones
// (0.log.<timestamp>[.gz], oldest first), then 0.log.
func logFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var rotated []string
	current := false
	for _, e := range ents {
		switch {
		case e.Name() == "0.log":
			current = true
		case strings.HasPrefix(e.Name(), "0.log.") && !strings.HasSuffix(e.Name(), ".tmp"):
			rotated = append(rotated, e.Name())
		}
	}
	sort.Slice(rotated, func(i, j int) bool {
		return strings.TrimSuffix(rotated[i], ".gz") < strings.TrimSuffix(rotated[j], ".gz")
	})
	if current {
		rotated = append(rotated, "0.log")
	}
	return rotated, nil
}

func readMaybeGzip(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = f
	if filepath.Ext(path) == ".gz" {
		z, err := gzip.NewReader(f)
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		defer z.Close()
		r = z
	}
	b, err := io.ReadAll(r)
	return string(b), err
}

// histogram is one Prometheus histogram series: cumulative bucket counts
// by upper bound, sum and count.
type histogram struct {
	buckets map[float64]float64
	sum     float64
	count   float64
}

// quantile estimates the q-quantile by linear interpolation inside the
// bucket it falls in, as PromQL's histogram_quantile does.
func (h *histogram) quantile(q float64) float64 {
	if h.count == 0 {
		return math.NaN()
	}
	var les []float64
	for le := range h.buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	rank := q * h.count
	prevLe, prevCount := 0.0, 0.0
	for _, le := range les {
		c := h.buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return prevLe
			}
			if c == prevCount {
				return le
			}
			return prevLe + (le-prevLe)*(rank-prevCount)/(c-prevCount)
		}
		prevLe, prevCount = le, c
	}
	return prevLe
}

// parseHistograms reads the series of histogram metric name from
// Prometheus text, keyed by the value of label key ("" for all in one).
func parseHistograms(text, name, key string) map[string]*histogram {
	out := map[string]*histogram{}
	get := func(k string) *histogram {
		h := out[k]
		if h == nil {
			h = &histogram{buckets: map[float64]float64{}}
			out[k] = h
		}
		return h
	}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"_") {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(value, ' '); i >= 0 { // a timestamp
			value = value[:i]
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		series, labels, _ := strings.Cut(metric, "{")
		lm := parseLabels(strings.TrimSuffix(labels, "}"))
		h := get(lm[key])
		switch series {
		case name + "_bucket":
			le, err := strconv.ParseFloat(lm["le"], 64)
			if lm["le"] == "+Inf" {
				le, err = math.Inf(1), nil
			}
			if err == nil {
				h.buckets[le] += v
			}
		case name + "_sum":
			h.sum += v
		case name + "_count":
			h.count += v
		}
	}
	return out
}

func parseLabels(s string) map[string]string {
	m := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, "=\"")
		if !ok {
			break
		}
		v, rest, _ := strings.Cut(rest, "\"")
		m[strings.TrimPrefix(k, ",")] = v
		s = strings.TrimPrefix(rest, ",")
	}
	return m
}

// summarizeMetrics prints kubelet's pod start latency and the runtime
// operation latencies it measured (CRI calls as kubelet sees them).
func summarizeMetrics(text string) string {
	var b strings.Builder
	b.WriteString("\nkubelet metrics (p50 estimated from histogram buckets):\n")
	for _, name := range []string{"kubelet_pod_start_duration_seconds", "kubelet_pod_start_sli_duration_seconds"} {
		for _, h := range parseHistograms(text, name, "") {
			if h.count > 0 {
				fmt.Fprintf(&b, "  %-44s count %4.0f  p50 %8.3fs  mean %8.3fs  sum %8.2fs\n", name, h.count, h.quantile(0.5), h.sum/h.count, h.sum)
			}
		}
	}
	ops := parseHistograms(text, "kubelet_runtime_operations_duration_seconds", "operation_type")
	var names []string
	for k, h := range ops {
		if h.count > 0 {
			names = append(names, k)
		}
	}
	sort.Slice(names, func(i, j int) bool { return ops[names[i]].sum > ops[names[j]].sum })
	b.WriteString("  kubelet_runtime_operations_duration_seconds by operation_type (by total time):\n")
	for _, k := range names {
		h := ops[k]
		fmt.Fprintf(&b, "    %-28s count %6.0f  p50 %9.4fs  mean %9.4fs  sum %8.2fs\n", k, h.count, h.quantile(0.5), h.sum/h.count, h.sum)
	}
	return b.String()
}
