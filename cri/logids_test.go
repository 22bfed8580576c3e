package cri

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestLogLinesNameTheObject: the request log line of a call about a pod
// or container names it, also when only the response knows the new ID.
func TestLogLinesNameTheObject(t *testing.T) {
	var buf bytes.Buffer
	icpt := loggingInterceptor(slog.New(slog.NewTextHandler(&buf, nil)))
	for _, c := range []struct {
		method    string
		req, resp any
		want      []string
	}{
		{"CreateContainer", &runtimeapi.CreateContainerRequest{PodSandboxId: "p1"}, &runtimeapi.CreateContainerResponse{ContainerId: "c1"}, []string{"pod=p1", "container=c1"}},
		{"StartContainer", &runtimeapi.StartContainerRequest{ContainerId: "c2"}, &runtimeapi.StartContainerResponse{}, []string{"container=c2"}},
		{"RunPodSandbox", &runtimeapi.RunPodSandboxRequest{}, &runtimeapi.RunPodSandboxResponse{PodSandboxId: "p3"}, []string{"pod=p3"}},
		{"StopPodSandbox", &runtimeapi.StopPodSandboxRequest{PodSandboxId: "p4"}, nil, []string{"pod=p4"}},
	} {
		buf.Reset()
		icpt(context.Background(), c.req, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + c.method},
			func(context.Context, any) (any, error) { return c.resp, nil })
		for _, w := range c.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("%s: log line %q lacks %q", c.method, buf.String(), w)
			}
		}
	}
}
