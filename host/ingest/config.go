package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/internal/bearer"
)

// Config is the user-set configuration of the receivers. DefaultConfig gives
// the defaults named in each comment.
type Config struct {
	// GRPCAddr is the OTLP/gRPC listen address. Default ":4317". Empty, or
	// port 0, disables the gRPC receiver.
	GRPCAddr string
	// MaxRequestBytes bounds one request: an HTTP body both as sent and after
	// gzip decompression, and one gRPC message. Larger requests get 413 /
	// RESOURCE_EXHAUSTED. Default 16 MiB.
	MaxRequestBytes int64
	// MaxSpanAttributes is the most attributes one span may carry; a span with
	// more is rejected (reason too_many_attributes). Default 128, the
	// OpenTelemetry SDKs' own default limit.
	MaxSpanAttributes int
	// MaxResourceAttributes is the most attributes one resource may carry;
	// every span of a resource with more is rejected (reason
	// too_many_resource_attributes). Default 128, as for spans: the SDKs
	// apply their span limit to resources only by convention, and resource
	// detectors produce a few dozen at most.
	MaxResourceAttributes int
	// MaxConcurrentRequests bounds the requests being decoded and handed to
	// the sink at once, HTTP and gRPC together, and so the memory decoding
	// takes (about 2×MaxRequestBytes each at worst). A request takes its
	// slot only once its body or message has fully arrived, so slow senders
	// hold none. Further requests wait for a slot until their own deadline.
	// Default 32.
	MaxConcurrentRequests int
	// MaxBufferedBytes bounds the memory held by HTTP request bodies, all
	// requests together, from their first byte until they are answered.
	// Bodies take memory only as their bytes arrive (at most about twice
	// what has arrived, and 8 KiB to begin with), never what
	// Content-Length promises, so slow senders cannot reserve it. A request
	// whose body would take more is answered 429 with Retry-After. Must be
	// at least MaxRequestBytes. Default 256 MiB, sixteen maximal requests.
	MaxBufferedBytes int64
	// MinReadRate is the slowest a request may arrive after ReadGrace, in
	// bytes per second: an HTTP body of n bytes (as sent, before gzip) must
	// have arrived ReadGrace + n/MinReadRate after its headers, or the
	// request is answered 408 and its connection closed. A gRPC message
	// must arrive within ReadGrace + MaxRequestBytes/MinReadRate (gRPC
	// gives no view of a message's progress), or the call ends with
	// DEADLINE_EXCEEDED. Default 64 KiB/s (a 16 MiB body has 4m21s).
	MinReadRate int64
	// ReadGrace is the time a request body may take before MinReadRate
	// applies. Default 5s.
	ReadGrace time.Duration
	// RetryAfter is the delay suggested to senders when the trace buffer is
	// full or the receiver is unavailable (HTTP Retry-After, rounded up to
	// whole seconds; gRPC RetryInfo). Default 1s.
	RetryAfter time.Duration
	// Token, when set, must be presented as "Authorization: Bearer <token>"
	// on HTTP and as "authorization: Bearer <token>" metadata on gRPC.
	// Default empty: no authentication. A secret: pass it by env or file.
	Token string
}

// DefaultConfig returns the defaults documented on each Config field.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:              ":4317",
		MaxRequestBytes:       16 << 20,
		MaxSpanAttributes:     defaultMaxAttrs,
		MaxResourceAttributes: defaultMaxAttrs,
		MaxConcurrentRequests: 32,
		MaxBufferedBytes:      256 << 20,
		MinReadRate:           64 << 10,
		ReadGrace:             5 * time.Second,
		RetryAfter:            time.Second,
	}
}

// Validate reports every invalid field at once, each named.
func (c Config) Validate() error {
	var errs []error
	if c.GRPCAddr != "" {
		if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
			errs = append(errs, fmt.Errorf("GRPCAddr %q is not host:port: %v", c.GRPCAddr, err))
		}
	}
	if c.MaxRequestBytes <= 0 || c.MaxRequestBytes > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("MaxRequestBytes must be between 1 and %d, got %d", math.MaxInt32, c.MaxRequestBytes))
	}
	if c.MaxSpanAttributes <= 0 {
		errs = append(errs, fmt.Errorf("MaxSpanAttributes must be positive, got %d", c.MaxSpanAttributes))
	}
	if c.MaxResourceAttributes <= 0 {
		errs = append(errs, fmt.Errorf("MaxResourceAttributes must be positive, got %d", c.MaxResourceAttributes))
	}
	if c.MaxConcurrentRequests <= 0 {
		errs = append(errs, fmt.Errorf("MaxConcurrentRequests must be positive, got %d", c.MaxConcurrentRequests))
	}
	if c.MaxBufferedBytes < c.MaxRequestBytes || c.MaxBufferedBytes <= 0 {
		errs = append(errs, fmt.Errorf("MaxBufferedBytes must be at least MaxRequestBytes (%d), got %d", c.MaxRequestBytes, c.MaxBufferedBytes))
	}
	if c.MinReadRate <= 0 {
		errs = append(errs, fmt.Errorf("MinReadRate must be positive (bytes per second), got %d", c.MinReadRate))
	}
	if c.ReadGrace <= 0 {
		errs = append(errs, fmt.Errorf("ReadGrace must be positive, got %v", c.ReadGrace))
	}
	if c.RetryAfter <= 0 {
		errs = append(errs, fmt.Errorf("RetryAfter must be positive, got %v", c.RetryAfter))
	}
	if c.Token != "" {
		if _, err := bearer.Parse("BETRACE_INGEST_TOKEN", c.Token); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// maxReceiveTime is how long one gRPC message may take to arrive: the time
// MinReadRate allows the largest one.
func (c Config) maxReceiveTime() time.Duration {
	return c.ReadGrace + time.Duration(c.MaxRequestBytes*int64(time.Second)/c.MinReadRate)
}

// grpcEnabled reports whether GRPCAddr asks for a gRPC listener.
func (c Config) grpcEnabled() bool {
	if c.GRPCAddr == "" {
		return false
	}
	_, port, err := net.SplitHostPort(c.GRPCAddr)
	return err == nil && port != "0"
}

// Settings are the developer-set dependencies of a Receiver.
type Settings struct {
	// Logger receives lifecycle lines only; the caller tags it with its
	// component. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the receivers' metrics. Nil keeps them private.
	Registerer prometheus.Registerer
}
