package cri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/runclet/runclet/runtime/image/trust"
)

// Prometheus metrics of the daemon itself (not of its containers: those
// are the CRI metrics RPCs, cri_metrics.go). They live in a private
// registry, always recorded (it costs a histogram observation per RPC)
// and served at /metrics on Options.MetricsAddress when that is set.

// metrics is the daemon's registry and the instruments the interceptors
// update.
type metrics struct {
	reg      *prometheus.Registry
	duration *prometheus.HistogramVec
	requests *prometheus.CounterVec
}

var (
	podsDesc = prometheus.NewDesc("runclet_pods",
		"CRI pod sandboxes in the daemon's index, by state (ready, notready).", []string{"state"}, nil)
	containersDesc = prometheus.NewDesc("runclet_containers",
		"CRI containers in the daemon's index, by state (created, running, exited, unknown).", []string{"state"}, nil)
)

func newMetrics(x *index) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "runclet_cri_request_duration_seconds",
			Help: "Time the CRI server took to answer an RPC (for streams: the stream's life), by method.",
			// 100 µs .. ~100 s: List calls take microseconds, pulls minutes.
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 11),
		}, []string{"method"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "runclet_cri_requests_total",
			Help: "CRI RPCs answered, by method and the gRPC code the client saw.",
		}, []string{"method", "code"}),
	}
	m.reg.MustRegister(m.duration, m.requests, indexCollector{x}, trust.Collector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(method string, start time.Time, err error) {
	m.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
}

// metricsInterceptor counts requests and times them. It sits between the
// logging and the error interceptor in the chain, so the error it sees
// already carries the gRPC code the client gets.
func metricsInterceptor(m *metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observe(methodName(info.FullMethod), start, err)
		return resp, err
	}
}

func metricsStreamInterceptor(m *metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observe(methodName(info.FullMethod), start, err)
		return err
	}
}

// indexCollector counts pods and containers by state from the index when
// scraped: no goroutine keeps gauges up to date.
type indexCollector struct{ x *index }

func (c indexCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- podsDesc
	ch <- containersDesc
}

func (c indexCollector) Collect(ch chan<- prometheus.Metric) {
	pods := map[string]int{"ready": 0, "notready": 0}
	for _, v := range c.x.sandboxes() {
		pods[stateLabel(sandboxState(v.pod, v.containers).String(), "SANDBOX_")]++
	}
	ctrs := map[string]int{"created": 0, "running": 0, "exited": 0, "unknown": 0}
	for _, e := range c.x.containers() {
		ctrs[stateLabel(containerState(e.app.State).String(), "CONTAINER_")]++
	}
	for state, n := range pods {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, float64(n), state)
	}
	for state, n := range ctrs {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), state)
	}
}

// stateLabel turns SANDBOX_READY into ready.
func stateLabel(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

// startMetrics serves /metrics on Options.MetricsAddress, if set.
func (s *Server) startMetrics() error {
	if s.opts.MetricsAddress == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.MetricsAddress)
	if err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg}))
	s.metricsURL = "http://" + ln.Addr().String() + "/metrics"
	s.metricsHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := s.metricsHTTP.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}

// MetricsURL is the URL Prometheus scrapes, "" when metrics are not served.
func (s *Server) MetricsURL() string { return s.metricsURL }
