package cri

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// scrape fetches /metrics and returns its sample lines by "name{labels}".
func scrape(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		out[line[:i]] = line[i+1:]
	}
	return out
}

func TestPrometheusMetrics(t *testing.T) {
	ts := startServer(t, newReal(t), func(o *Options) { o.MetricsAddress = "127.0.0.1:0" })
	if !strings.HasPrefix(ts.MetricsURL(), "http://127.0.0.1:") || !strings.HasSuffix(ts.MetricsURL(), "/metrics") {
		t.Fatalf("metrics URL %q", ts.MetricsURL())
	}
	ctx := context.Background()

	// Two pods, one stopped; three containers: created, running, exited.
	web := ts.runPod(t, realSandboxConfig(t, "web"))
	old := ts.runPod(t, realSandboxConfig(t, "old"))
	ts.createCtr(t, web, sleeperConfig("created"))
	running := ts.createCtr(t, web, sleeperConfig("running"))
	exited := ts.createCtr(t, web, sleeperConfig("exited"))
	for _, id := range []string{running, exited} {
		if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: exited}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: old}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := ts.rt.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// Failing calls: the code is the one the client saw.
	_, err := ts.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "nosuchpod"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("want NotFound, got %v", err)
	}
	_, err = ts.rt.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: running})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("want Unimplemented, got %v", err)
	}
	// A streaming RPC.
	stream, err := ts.rt.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}

	m := scrape(t, ts.MetricsURL())
	want := map[string]string{
		`runclet_cri_requests_total{code="OK",method="Version"}`:                        "2",
		`runclet_cri_requests_total{code="OK",method="RunPodSandbox"}`:                  "2",
		`runclet_cri_requests_total{code="OK",method="StartContainer"}`:                 "2",
		`runclet_cri_requests_total{code="NotFound",method="PodSandboxStatus"}`:         "1",
		`runclet_cri_requests_total{code="Unimplemented",method="CheckpointContainer"}`: "1",
		`runclet_cri_requests_total{code="OK",method="StreamPodSandboxes"}`:             "1",
		`runclet_cri_request_duration_seconds_count{method="Version"}`:                  "2",
		`runclet_cri_request_duration_seconds_count{method="PodSandboxStatus"}`:         "1",
		`runclet_cri_request_duration_seconds_count{method="StreamPodSandboxes"}`:       "1",
		`runclet_cri_request_duration_seconds_bucket{method="Version",le="+Inf"}`:       "2",
		`runclet_pods{state="ready"}`:                                                   "1",
		`runclet_pods{state="notready"}`:                                                "1",
		`runclet_containers{state="created"}`:                                           "1",
		`runclet_containers{state="running"}`:                                           "1",
		`runclet_containers{state="exited"}`:                                            "1",
		`runclet_containers{state="unknown"}`:                                           "0",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	if _, ok := m[`runclet_cri_requests_total{code="OK",method="PodSandboxStatus"}`]; ok {
		t.Error("a failed call was counted as OK")
	}
	for _, k := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing: the Go and process collectors are not registered", k)
		}
	}

	// Gauges are computed at scrape time: removing the stopped pod shows.
	if _, err := ts.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: old}); err != nil {
		t.Fatal(err)
	}
	if m := scrape(t, ts.MetricsURL()); m[`runclet_pods{state="notready"}`] != "0" || m[`runclet_pods{state="ready"}`] != "1" {
		t.Errorf("after removal: ready %s, notready %s", m[`runclet_pods{state="ready"}`], m[`runclet_pods{state="notready"}`])
	}

	// The HTTP server goes with the daemon.
	url := ts.MetricsURL()
	ts.Stop(0)
	if resp, err := http.Get(url); err == nil {
		resp.Body.Close()
		t.Fatal("metrics still served after Stop")
	}
}

func TestNoMetricsServerByDefault(t *testing.T) {
	ts := startServer(t, newReal(t))
	if ts.MetricsURL() != "" || ts.metricsHTTP != nil {
		t.Fatalf("metrics served without an address: %q", ts.MetricsURL())
	}
}
