package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// podStartLatency runs alone: 8 pods one after another, then 8 at once,
// each a single busybox container (image present). It measures the time
// from the API create call to the pod running as the API shows it
// (polled every 50 ms), and what kubelet measured meanwhile (the
// difference of its histograms before and after).
func podStartLatency(t *T) error {
	before, err := t.c.kubeletMetrics(t.ctx)
	if err != nil {
		return err
	}
	start := func(name string) (time.Duration, error) {
		t0 := time.Now()
		if err := t.createPod(name, "terminationGracePeriodSeconds: 1\ncontainers:"+sleeper); err != nil {
			return 0, err
		}
		deadline := t0.Add(60 * time.Second)
		for {
			p, err := t.getPod(name)
			if err == nil && p.Status.Phase == "Running" && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil {
				return time.Since(t0), nil
			}
			if time.Now().After(deadline) || t.ctx.Err() != nil {
				s := fmt.Sprint(err)
				if p != nil {
					s = p.summary()
				}
				return 0, fmt.Errorf("pod %s not running after 60 s (%s)", name, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	const n = 8
	var seq []time.Duration
	for i := range n {
		d, err := start(fmt.Sprintf("latency-seq-%d", i))
		if err != nil {
			return err
		}
		seq = append(seq, d)
	}
	burst := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); burst[i], errs[i] = start(fmt.Sprintf("latency-burst-%d", i)) }()
	}
	wg.Wait()
	all := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	after, err := t.c.kubeletMetrics(t.ctx)
	if err != nil {
		return err
	}
	t.note("create → running (API, 50 ms polls): %d in a row p50 %v max %v; %d at once p50 %v max %v, all in %v",
		n, pct(seq, 50), pct(seq, 100), n, pct(burst, 50), pct(burst, 100), all.Round(10*time.Millisecond))
	sli := diffHistogram(parseHistograms(after, "kubelet_pod_start_sli_duration_seconds", "")[""], parseHistograms(before, "kubelet_pod_start_sli_duration_seconds", "")[""])
	e2e := diffHistogram(parseHistograms(after, "kubelet_pod_start_duration_seconds", "")[""], parseHistograms(before, "kubelet_pod_start_duration_seconds", "")[""])
	t.note("kubelet: pod_start_sli_duration count %.0f mean %.3fs p50≈%.3fs; pod_start_duration count %.0f mean %.3fs p50≈%.3fs",
		sli.count, sli.mean(), sli.quantile(0.5), e2e.count, e2e.mean(), e2e.quantile(0.5))
	opsA := parseHistograms(after, "kubelet_runtime_operations_duration_seconds", "operation_type")
	opsB := parseHistograms(before, "kubelet_runtime_operations_duration_seconds", "operation_type")
	var parts []string
	for _, op := range []string{"run_podsandbox", "create_container", "start_container", "pull_image", "podsandbox_status", "container_status"} {
		h := diffHistogram(opsA[op], opsB[op])
		if h.count > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f× mean %.1fms", op, h.count, 1000*h.mean()))
		}
	}
	t.note("kubelet runtime operations meanwhile: %s", strings.Join(parts, ", "))
	return nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s) - 1) * p / 100
	return s[i].Round(time.Millisecond)
}

func (h *histogram) mean() float64 {
	if h == nil || h.count == 0 {
		return 0
	}
	return h.sum / h.count
}

// diffHistogram is a - b (b may be nil: nothing before).
func diffHistogram(a, b *histogram) *histogram {
	d := &histogram{buckets: map[float64]float64{}}
	if a == nil {
		return d
	}
	d.sum, d.count = a.sum, a.count
	for le, v := range a.buckets {
		d.buckets[le] = v
	}
	if b != nil {
		d.sum -= b.sum
		d.count -= b.count
		for le, v := range b.buckets {
			d.buckets[le] -= v
		}
	}
	return d
}
