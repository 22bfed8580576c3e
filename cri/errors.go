package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image/trust"
)

// errUnimplemented is the class of what runclet's CRI does not do yet;
// it becomes codes.Unimplemented.
var errUnimplemented = errors.New("not implemented")

// notImplemented says what is missing: "<what> is" + " not implemented
// in runclet yet".
func notImplemented(format string, a ...any) error {
	return unimplementedError(fmt.Sprintf(format, a...) + " not implemented in runclet yet (see docs/cri.md)")
}

type unimplementedError string

func (e unimplementedError) Error() string        { return string(e) }
func (e unimplementedError) Is(target error) bool { return target == errUnimplemented }

// Code is the gRPC code for an error: the one place runclet's error
// classes become gRPC codes. Errors that already carry a gRPC status keep
// it.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	switch {
	case errors.Is(err, trust.ErrRefused):
		// The image trust policy refused the image: kubelet shows the
		// message (image, rule, reason) in the pod's events.
		return codes.PermissionDenied
	case errors.Is(err, errdefs.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, errdefs.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, errdefs.ErrFailedPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, errdefs.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, errdefs.ErrDeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, errUnimplemented):
		return codes.Unimplemented
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// toStatus turns a handler's error into a gRPC status error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Error(Code(err), err.Error())
}

// errorInterceptor maps every handler error to its gRPC code, so handlers
// just return errors.
func errorInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, toStatus(err)
}

func errorStreamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return toStatus(handler(srv, ss))
}

type loggerKey struct{}

// logger is the request's logger (request id and method attached), or
// slog's default outside a request.
func logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

func withLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// quiet methods are the ones kubelet calls every second or so: their
// successes (and NotFound answers) are logged at debug level only.
func quiet(method string) bool {
	return strings.HasPrefix(method, "List") || strings.HasPrefix(method, "Stream") ||
		strings.HasSuffix(method, "Status") || strings.HasSuffix(method, "Stats") ||
		method == "Version" || method == "ImageFsInfo" || method == "ExecSync" || method == "RuntimeConfig"
}

func methodName(full string) string {
	return full[strings.LastIndexByte(full, '/')+1:]
}

// logRequest logs one finished request with its id, method, duration and
// error (whose code the error interceptor has already set).
func logRequest(ctx context.Context, l *slog.Logger, method string, start time.Time, err error) {
	level := slog.LevelInfo
	code := status.Code(err)
	switch {
	case err == nil && quiet(method), code == codes.NotFound && quiet(method):
		level = slog.LevelDebug
	case code == codes.Unknown, code == codes.Internal:
		level = slog.LevelError
	case err != nil:
		level = slog.LevelWarn
	}
	attrs := []any{"duration", time.Since(start).Round(time.Microsecond)}
	if err != nil {
		attrs = append(attrs, "code", code.String(), "err", status.Convert(err).Message())
	}
	l.Log(ctx, level, "cri", attrs...)
}

// loggingInterceptor gives each request an id and a logger in its context
// and logs it when done.
func loggingInterceptor(base *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		method := methodName(info.FullMethod)
		l := base.With("req", requestID(), "method", method)
		start := time.Now()
		resp, err := handler(withLogger(ctx, l), req)
		logRequest(ctx, l.With(objectIDs(req, resp)...), method, start, err)
		return resp, err
	}
}

func loggingStreamInterceptor(base *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		method := methodName(info.FullMethod)
		l := base.With("req", requestID(), "method", method)
		start := time.Now()
		err := handler(srv, &loggedStream{ServerStream: ss, ctx: withLogger(ss.Context(), l)})
		logRequest(ss.Context(), l, method, start, err)
		return err
	}
}

// objectIDs names the pod sandbox and container a request is about,
// from the request (StartContainer, StopPodSandbox, ...) or, for the
// calls that make them (RunPodSandbox, CreateContainer), the response:
// every log line about an object says which one.
func objectIDs(req, resp any) []any {
	type podID interface{ GetPodSandboxId() string }
	type containerID interface{ GetContainerId() string }
	var attrs []any
	for _, key := range []struct {
		name string
		get  func(any) string
	}{
		{"pod", func(v any) string {
			if x, ok := v.(podID); ok {
				return x.GetPodSandboxId()
			}
			return ""
		}},
		{"container", func(v any) string {
			if x, ok := v.(containerID); ok {
				return x.GetContainerId()
			}
			return ""
		}},
	} {
		id := key.get(req)
		if id == "" && resp != nil {
			id = key.get(resp)
		}
		if id != "" {
			attrs = append(attrs, key.name, id)
		}
	}
	return attrs
}

type loggedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *loggedStream) Context() context.Context { return s.ctx }

func requestID() string { return fmt.Sprintf("%08x", rand.Uint32()) }
