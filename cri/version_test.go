package cri

import (
	"context"
	"testing"

	utilversion "k8s.io/apimachinery/pkg/util/version"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubeletShows is what kubelet puts in a node's
// status.nodeInfo.containerRuntimeVersion for a Version response: it
// parses RuntimeVersion as kubelet's newRuntimeVersion does
// (pkg/kubelet/kuberuntime) and falls back to "Unknown" as its node status
// setter does when that fails.
func kubeletShows(v *runtimeapi.VersionResponse) string {
	ver, err := utilversion.ParseSemantic(v.RuntimeVersion)
	if err != nil {
		ver, err = utilversion.ParseGeneric(v.RuntimeVersion)
	}
	if err != nil {
		return v.RuntimeName + "://Unknown"
	}
	return v.RuntimeName + "://" + ver.String()
}

// TestVersionKubeletCanParse: whatever version the binary was built with
// (the Makefile's `git describe`, a plain `go build`'s "dev", nothing),
// the Version RPC reports a runtime version kubelet parses, so nodes do
// not show runclet://Unknown.
func TestVersionKubeletCanParse(t *testing.T) {
	f := newSpy(t)
	for _, tc := range []struct{ build, want string }{
		{"1.2.3", "runclet://1.2.3"},
		{"v0.2.0", "runclet://0.2.0"},
		{"v0.2.0-3-g43827c5", "runclet://0.2.0-3-g43827c5"},
		{"43827c5", "runclet://0.1.0-43827c5"},
		{"43827c5-dirty", "runclet://0.1.0-43827c5-dirty"},
		{"dev", "runclet://0.1.0-dev"},
		{"", "runclet://0.1.0-dev"},
		{"weird/branch name+x", "runclet://0.1.0-weird.branch.name.x"},
	} {
		ts := startServer(t, f, func(o *Options) { o.Version = tc.build })
		v, err := ts.rt.Version(context.Background(), &runtimeapi.VersionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if v.RuntimeName != "runclet" || v.RuntimeVersion == "" {
			t.Errorf("build %q: name %q version %q", tc.build, v.RuntimeName, v.RuntimeVersion)
		}
		if got := kubeletShows(v); got != tc.want {
			t.Errorf("build %q: kubelet shows %q, want %q", tc.build, got, tc.want)
		}
	}
}
