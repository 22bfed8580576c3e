package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// errInterrupted is the cause of a context that SIGINT or SIGTERM ended.
type errInterrupted struct{ sig os.Signal }

func (e errInterrupted) Error() string {
	if s, ok := e.sig.(syscall.Signal); ok {
		return "interrupted by " + unix.SignalName(s)
	}
	return fmt.Sprintf("interrupted by %v", e.sig)
}

// interruptible returns a context that the first SIGINT or SIGTERM
// cancels, so the operation under it (a pull) runs its own cleanup
// (partial downloads, half-unpacked layers) and returns. Once that signal
// came, the default action is back: a second one ends the process at once.
// stop releases the signals.
func interruptible(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			cancel(errInterrupted{s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// interruptedErr turns an error that a signal caused into one that says
// so; other errors pass unchanged.
func interruptedErr(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if cause, ok := context.Cause(ctx).(errInterrupted); ok {
		return fmt.Errorf("%s %s; its partial files were removed", what, cause)
	}
	return err
}
