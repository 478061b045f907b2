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
	// MaxConcurrentRequests bounds the requests being read and decoded at
	// once, HTTP and gRPC together, and so the memory they hold (about
	// 2×MaxRequestBytes each at worst). Further requests wait for a slot
	// until their own deadline. Default 32.
	MaxConcurrentRequests int
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
		MaxConcurrentRequests: 32,
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
	if c.MaxConcurrentRequests <= 0 {
		errs = append(errs, fmt.Errorf("MaxConcurrentRequests must be positive, got %d", c.MaxConcurrentRequests))
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
