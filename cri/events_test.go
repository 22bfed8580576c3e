package cri

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/runtime/pod"
)

// recvEvents reads n events (or fails after 5 s) as "TYPE:id".
func recvEvents(t *testing.T, s runtimeapi.RuntimeService_GetContainerEventsClient, n int) ([]string, []*runtimeapi.ContainerEventResponse) {
	t.Helper()
	type res struct {
		ev  *runtimeapi.ContainerEventResponse
		err error
	}
	var names []string
	var evs []*runtimeapi.ContainerEventResponse
	for range n {
		ch := make(chan res, 1)
		go func() {
			ev, err := s.Recv()
			ch <- res{ev, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("after %v: %v", names, r.err)
			}
			names = append(names, fmt.Sprintf("%s:%s", r.ev.ContainerEventType, r.ev.ContainerId))
			evs = append(evs, r.ev)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v, waited for %d events", names, n)
		}
	}
	return names, evs
}

func TestContainerEventsFromMutationsAndExits(t *testing.T) {
	ts := startServer(t, newReal(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two subscribers get the same events.
	var subs []runtimeapi.RuntimeService_GetContainerEventsClient
	for range 2 {
		s, err := ts.rt.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.events.n.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("subscribers did not register")
		}
		time.Sleep(time.Millisecond)
	}

	podID := ts.runPod(t, realSandboxConfig(t, "web"))
	cc := ctrConfig("app", testImage)
	cc.Command = []string{"sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7"}
	id := ts.createCtr(t, podID, cc)
	if _, err := ts.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	// The app exits by itself (an exec is no event): inotify tells the index.
	if _, err := ts.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"touch", "/tmp/go"}, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"CONTAINER_CREATED_EVENT:" + podID, "CONTAINER_STARTED_EVENT:" + podID,
		"CONTAINER_CREATED_EVENT:" + id, "CONTAINER_STARTED_EVENT:" + id, "CONTAINER_STOPPED_EVENT:" + id,
	}
	for i, s := range subs {
		got, evs := recvEvents(t, s, len(want))
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("subscriber %d: %v\nwant %v", i, got, want)
		}
		// Every event carries the pod's status and all its containers'.
		stopped := evs[4]
		if stopped.PodSandboxStatus.Id != podID || stopped.PodSandboxStatus.Metadata.Uid != "uid-web" ||
			len(stopped.ContainersStatuses) != 1 || stopped.ContainersStatuses[0].State != runtimeapi.ContainerState_CONTAINER_EXITED ||
			stopped.ContainersStatuses[0].ExitCode != 7 || stopped.CreatedAt == 0 {
			t.Fatalf("stopped event: %v", stopped)
		}
		if created := evs[2]; len(created.ContainersStatuses) != 1 || created.ContainersStatuses[0].State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Fatalf("created event: %v", created)
		}
	}
	// StopContainer of an exited container is no news; removing is.
	ts.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id})
	id2 := ts.createCtr(t, podID, ctrConfig("second", testImage))
	ts.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	ts.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
	ts.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
	want = []string{
		"CONTAINER_CREATED_EVENT:" + id2, "CONTAINER_DELETED_EVENT:" + id,
		// StopPodSandbox stops id2 (created, never started) and the pod.
		"CONTAINER_STOPPED_EVENT:" + id2, "CONTAINER_STOPPED_EVENT:" + podID,
		"CONTAINER_DELETED_EVENT:" + id2, "CONTAINER_DELETED_EVENT:" + podID,
	}
	got, evs := recvEvents(t, subs[0], len(want))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%v\nwant %v", got, want)
	}
	if del := evs[1]; len(del.ContainersStatuses) != 1 || del.ContainersStatuses[0].Id != id2 {
		t.Fatalf("a deleted container is gone from its pod's statuses: %v", del.ContainersStatuses)
	}
	if podDel := evs[5]; podDel.PodSandboxStatus.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY || len(podDel.ContainersStatuses) != 0 {
		t.Fatalf("pod deleted: %v", podDel)
	}

	// Stopping the daemon ends the streams (and does not wait for them).
	start := time.Now()
	ts.Stop(5 * time.Second)
	if time.Since(start) > 2*time.Second {
		t.Fatalf("stop waited %v for event streams", time.Since(start))
	}
	for _, s := range subs {
		for {
			_, err := s.Recv()
			if err != nil {
				if c := status.Code(err); c != codes.Unavailable {
					t.Fatalf("stream end: %v", err)
				}
				break
			}
		}
	}
}

// A created container whose exit is the first news of its start gets
// both events, in order.
func TestEventsOfAnExitSeenBeforeTheStart(t *testing.T) {
	x := newIndex()
	x.events = newEventBroker()
	sub, _ := x.events.subscribe()
	x.addPod(&pod.Pod{ID: "p1", State: pod.PodReady})
	x.addContainer(&containerEntry{app: &pod.App{ID: "a1", PodID: "p1", State: pod.AppCreated}})
	x.updateApp(&pod.App{ID: "a1", PodID: "p1", State: pod.AppExited, StartedAt: time.Now(), FinishedAt: time.Now()})
	x.updateApp(&pod.App{ID: "a1", PodID: "p1", State: pod.AppRunning}) // stale: no event
	var got []string
	for len(sub.ch) > 0 {
		ev := <-sub.ch
		got = append(got, ev.ContainerEventType.String()+":"+ev.ContainerId)
	}
	want := "[CONTAINER_CREATED_EVENT:p1 CONTAINER_STARTED_EVENT:p1 CONTAINER_CREATED_EVENT:a1 CONTAINER_STARTED_EVENT:a1 CONTAINER_STOPPED_EVENT:a1]"
	if fmt.Sprint(got) != want {
		t.Fatalf("%v\nwant %s", got, want)
	}
}

// A subscriber that does not read is dropped once eventBuffer events are
// waiting for it; publishing never blocks and the others get everything.
func TestSlowEventSubscriberIsDropped(t *testing.T) {
	b := newEventBroker()
	fast, _ := b.subscribe()
	slow, _ := b.subscribe()
	done := make(chan int)
	go func() {
		n := 0
		for i := range 3 * eventBuffer {
			b.publish(&runtimeapi.ContainerEventResponse{ContainerId: fmt.Sprint(i)})
			if ev := <-fast.ch; ev.ContainerId == fmt.Sprint(i) {
				n++
			}
		}
		done <- n
	}()
	select {
	case n := <-done:
		if n != 3*eventBuffer {
			t.Fatalf("the reading subscriber got %d events in order", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publishing blocked on a slow subscriber")
	}
	select {
	case <-slow.done:
	default:
		t.Fatal("the slow subscriber was not dropped")
	}
	if status.Code(slow.err) != codes.ResourceExhausted || len(slow.ch) != eventBuffer {
		t.Fatalf("slow: %v, %d buffered", slow.err, len(slow.ch))
	}
	if b.n.Load() != 1 {
		t.Fatalf("%d subscribers left, want 1", b.n.Load())
	}
	b.unsubscribe(fast)
	if b.active() {
		t.Fatal("active without subscribers")
	}
}

// Through gRPC: a client that stops reading is dropped with
// ResourceExhausted after what was buffered for it, and the daemon's
// mutations never wait for it.
func TestSlowEventClientDoesNotBlockTheDaemon(t *testing.T) {
	// Real mutations take tens of milliseconds: a smaller buffer fills sooner.
	defer func(n int) { eventBuffer = n }(eventBuffer)
	eventBuffer = 128
	ts := startServer(t, newReal(t))
	ctx := context.Background()
	s, err := ts.rt.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for ts.events.n.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	// Events with big statuses, so gRPC's flow control window fills and
	// the server's Send blocks: then the broker's buffer fills too.
	cfg := realSandboxConfig(t, "web")
	big := make(map[string]string)
	for i := range 64 {
		big[fmt.Sprintf("k%d", i)] = string(make([]byte, 1024))
	}
	cfg.Annotations = big
	podID := ts.runPod(t, cfg)
	start := time.Now()
	var mutations int
	for ts.events.n.Load() != 0 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the slow client was not dropped after %d mutations", mutations)
		}
		// Each refresh of the pod is a no-op for the index, so make
		// real transitions: create and remove a container.
		c := ts.createCtr(t, podID, ctrConfig(fmt.Sprintf("c%d", mutations), testImage))
		ts.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c})
		mutations++
	}
	t.Logf("dropped after %d mutations in %v", mutations, time.Since(start).Round(time.Millisecond))
	n := 0
	for {
		_, err := s.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("after %d events: %v", n, err)
			}
			break
		}
		n++
	}
	if n < eventBuffer {
		t.Fatalf("only %d events were delivered before the drop", n)
	}
}
