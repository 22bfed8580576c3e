package kube

import (
	"context"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveSandboxes stops and removes, through the CRI, every pod sandbox
// the runtime still has after kubelet is gone (kubelet removes the
// sandboxes of deleted pods only at its next garbage collection). Going
// through the runtime tears the network down (CNI DEL: addresses,
// iptables rules, cache files), which killing processes would not.
func RemoveSandboxes(endpoint string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Printf("CRI cleanup: %v", err)
		return
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	resp, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		log.Printf("CRI cleanup: ListPodSandbox: %v", err)
		return
	}
	for _, s := range resp.Items {
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			log.Printf("CRI cleanup: StopPodSandbox %s (%s): %v", s.Id, s.Metadata.GetName(), err)
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			log.Printf("CRI cleanup: RemovePodSandbox %s (%s): %v", s.Id, s.Metadata.GetName(), err)
		}
	}
	if len(resp.Items) > 0 {
		log.Printf("CRI cleanup: removed %d pod sandboxes kubelet left", len(resp.Items))
	}
}
