// Package errdefs is runclet's small error vocabulary. Every package wraps
// one of these classes with %w and a message saying what failed with what;
// the CRI server maps the classes to gRPC codes in one place and the CLI to
// exit messages.
package errdefs

import (
	"errors"
	"fmt"
)

// The error classes. Compare with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
)

// NotFound returns an error of class ErrNotFound with a formatted message.
func NotFound(format string, a ...any) error { return wrap(ErrNotFound, format, a...) }

// AlreadyExists returns an error of class ErrAlreadyExists.
func AlreadyExists(format string, a ...any) error { return wrap(ErrAlreadyExists, format, a...) }

// InvalidArgument returns an error of class ErrInvalidArgument.
func InvalidArgument(format string, a ...any) error { return wrap(ErrInvalidArgument, format, a...) }

// FailedPrecondition returns an error of class ErrFailedPrecondition.
func FailedPrecondition(format string, a ...any) error {
	return wrap(ErrFailedPrecondition, format, a...)
}

// Unavailable returns an error of class ErrUnavailable.
func Unavailable(format string, a ...any) error { return wrap(ErrUnavailable, format, a...) }

// classed keeps the caller's message as the whole text while errors.Is
// still finds the class (and any %w-wrapped cause inside the message).
type classed struct {
	class error
	err   error
}

func (c *classed) Error() string   { return c.err.Error() }
func (c *classed) Unwrap() []error { return []error{c.class, c.err} }

func wrap(class error, format string, a ...any) error {
	return &classed{class: class, err: fmt.Errorf(format, a...)}
}

// DeadlineExceeded returns an error of class ErrDeadlineExceeded: an
// operation ran out of the time it was given (an exec's timeout).
func DeadlineExceeded(format string, a ...any) error { return wrap(ErrDeadlineExceeded, format, a...) }

// IsNotFound reports whether err is of class ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is of class ErrAlreadyExists.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidArgument reports whether err is of class ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }
