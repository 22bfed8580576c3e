package integration

import (
	"os"
	"regexp"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod uid reaches CNI plugins inside CNI_ARGS ("K=V;K=V"): a uid with
// ';' and '=' must not choose the pod's IP (host-local honours IP=).
func TestCRIPodUIDCannotInjectCNIArgs(t *testing.T) {
	ci := newCRIInstance(t)
	cfg, err := os.ReadFile(ci.config)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`"(10\.215\.\d+)\.0/24"`).FindSubmatch(cfg)
	if m == nil {
		t.Fatalf("no subnet in %s", cfg)
	}
	chosen := string(m[1]) + ".123"
	ci.startDaemon()
	ctx := ctxT(t)
	for _, bad := range []func(*runtimeapi.PodSandboxConfig){
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "u;IP=" + chosen },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "u=x" },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "n;IP=" + chosen },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "ns;IP=" + chosen },
	} {
		sb := ci.sandboxConfig("inject")
		bad(sb)
		run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
		if err == nil {
			st, _ := ci.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: run.PodSandboxId})
			t.Errorf("pod with metadata %v was made, IP %s (injected %s)", sb.Metadata, st.GetStatus().GetNetwork().GetIp(), chosen)
			continue
		}
		wantCode(t, err, codes.InvalidArgument, "pod metadata with ';' and '='")
	}
	list, err := ci.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Error(err)
		}
		if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Error(err)
		}
	}
}
