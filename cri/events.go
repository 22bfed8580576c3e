package cri

import (
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Container events (GetContainerEvents, kubelet's evented PLEG) come from
// the index: every state change it records (a handler's mutation or an
// exit inotify reported) is published, built from the index's own
// entries while the change is made, so events of one container arrive in
// the order of its states. Sandboxes have events too, with the sandbox ID
// as container ID (as kubelet expects from runtimes with a pause
// container): created and started when RunPodSandbox made it, stopped,
// deleted.

// eventBuffer is how many events a subscriber may fall behind before it
// is dropped: a slow client must never slow the daemon down. A variable
// only so that a test over real pods can reach it in reasonable time.
var eventBuffer = 1024

// errSubscriberTooSlow ends a subscriber that fell eventBuffer events
// behind; it can subscribe again (and relist).
var errSubscriberTooSlow = status.Error(codes.ResourceExhausted, "container events: the client fell too far behind and was dropped; subscribe again and relist")

// eventBroker fans events out to subscribers through bounded channels.
type eventBroker struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	n      atomic.Int32 // len(subs), read without the lock
}

type subscriber struct {
	ch   chan *runtimeapi.ContainerEventResponse
	done chan struct{} // closed when dropped or the broker closes
	err  error         // why, set before done is closed
}

func newEventBroker() *eventBroker {
	return &eventBroker{subs: map[*subscriber]struct{}{}}
}

// active reports whether anyone listens, so events are only built then.
func (b *eventBroker) active() bool { return b != nil && b.n.Load() > 0 }

func (b *eventBroker) subscribe() (*subscriber, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, status.Error(codes.Unavailable, "the daemon is stopping")
	}
	s := &subscriber{ch: make(chan *runtimeapi.ContainerEventResponse, eventBuffer), done: make(chan struct{})}
	b.subs[s] = struct{}{}
	b.n.Store(int32(len(b.subs)))
	return s, nil
}

// unsubscribe forgets s (it may have been dropped already).
func (b *eventBroker) unsubscribe(s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		b.n.Store(int32(len(b.subs)))
	}
}

// publish hands ev to every subscriber without ever waiting: one whose
// buffer is full is dropped.
func (b *eventBroker) publish(ev *runtimeapi.ContainerEventResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			s.err = errSubscriberTooSlow
			close(s.done)
			delete(b.subs, s)
		}
	}
	b.n.Store(int32(len(b.subs)))
}

// close ends every subscription (the daemon stops: its streams must not
// hold the graceful stop up) and refuses new ones.
func (b *eventBroker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		s.err = status.Error(codes.Unavailable, "the daemon is stopping")
		close(s.done)
		delete(b.subs, s)
	}
	b.n.Store(0)
}

// GetContainerEvents streams container and sandbox events until the
// client goes away, falls too far behind (ResourceExhausted) or the
// daemon stops (Unavailable). Events buffered before a drop are still
// sent first.
func (s *Server) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	sub, err := s.events.subscribe()
	if err != nil {
		return err
	}
	defer s.events.unsubscribe(sub)
	ctx := stream.Context()
	for {
		select {
		case ev := <-sub.ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.done:
			for {
				select {
				case ev := <-sub.ch:
					if err := stream.Send(ev); err != nil {
						return err
					}
				default:
					return sub.err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// emit publishes one event about ctrID (a container, or the sandbox
// itself) of pod podID, with the pod's status and all its containers'
// as the index has them now. The caller holds x.mu.
func (x *index) emit(kind runtimeapi.ContainerEventType, ctrID, podID string) {
	if !x.events.active() {
		return
	}
	e, ok := x.pods[podID]
	if !ok {
		return
	}
	ctrs := x.containersOf(e)
	ev := &runtimeapi.ContainerEventResponse{
		ContainerId: ctrID, ContainerEventType: kind, CreatedAt: time.Now().UnixNano(),
		PodSandboxStatus: criSandboxStatus(sandboxView{pod: e.pod, containers: ctrs}),
	}
	for _, c := range ctrs {
		ev.ContainersStatuses = append(ev.ContainersStatuses, criContainerStatus(c))
	}
	x.events.publish(ev)
}
