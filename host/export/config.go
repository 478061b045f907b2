package export

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config sets where violation spans go and how hard the Exporter tries.
// Every field is a plain value; DefaultConfig gives each its default.
type Config struct {
	// Endpoint is the collector's OTLP/HTTP base address, as in
	// OTEL_EXPORTER_OTLP_ENDPOINT: "host:port" (meaning http://host:port),
	// "http://host:port" or "https://host:port", optionally with a base
	// path. Spans are POSTed to <Endpoint>/v1/traces. The port is the
	// collector's OTLP/HTTP port, 4318 by default; "host:4317" (the
	// OTLP/gRPC port) is refused. Default "": export disabled.
	Endpoint string
	// InstanceID becomes the resource attribute service.instance.id.
	// Default "": the attribute is omitted.
	InstanceID string
	// QueueSize is how many violations may wait to be sent. When the queue
	// is full, new violations are dropped and counted as failed emissions.
	// Default 10000.
	QueueSize int
	// BatchSize is the most violations sent in one request. Default 512.
	BatchSize int
	// FlushInterval is the longest a violation waits for its batch to
	// fill before the batch is sent anyway. Default 1s.
	FlushInterval time.Duration
	// Timeout bounds each request, from dial to the end of the response.
	// Default 10s.
	Timeout time.Duration
	// MaxRetryTime is how long one batch may be retried before it is given
	// up and counted as failed; 0 sends each batch once. Default 5m.
	MaxRetryTime time.Duration
}

// Defaults of Config.
const (
	DefaultQueueSize     = 10000
	DefaultBatchSize     = 512
	DefaultFlushInterval = time.Second
	DefaultTimeout       = 10 * time.Second
	DefaultMaxRetryTime  = 5 * time.Minute
)

// grpcPort is the collector's OTLP/gRPC port, which this package does not
// speak; see Config.Endpoint.
const grpcPort = "4317"

// DefaultConfig returns Config at its defaults, with export disabled.
func DefaultConfig() Config {
	return Config{
		QueueSize:     DefaultQueueSize,
		BatchSize:     DefaultBatchSize,
		FlushInterval: DefaultFlushInterval,
		Timeout:       DefaultTimeout,
		MaxRetryTime:  DefaultMaxRetryTime,
	}
}

// Validate names every field out of range.
func (c Config) Validate() error {
	var errs []error
	if c.Endpoint != "" {
		if _, err := tracesURL(c.Endpoint); err != nil {
			errs = append(errs, err)
		}
	}
	if c.QueueSize < 1 {
		errs = append(errs, fmt.Errorf("export QueueSize %d must be at least 1", c.QueueSize))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("export BatchSize %d must be at least 1", c.BatchSize))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("export FlushInterval %s must be positive", c.FlushInterval))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("export Timeout %s must be positive", c.Timeout))
	}
	if c.MaxRetryTime < 0 {
		errs = append(errs, fmt.Errorf("export MaxRetryTime %s must not be negative (0 disables retries)", c.MaxRetryTime))
	}
	return errors.Join(errs...)
}

// tracesURL turns an Endpoint into the URL spans are POSTed to.
func tracesURL(endpoint string) (*url.URL, error) {
	shown := redact(endpoint)
	if !strings.Contains(endpoint, "://") {
		host, port, err := net.SplitHostPort(endpoint)
		if err != nil || host == "" {
			return nil, fmt.Errorf("export Endpoint %q: want host:port, http://host:port or https://host:port", shown)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("export Endpoint %q: the port must be a number from 1 to 65535", shown)
		}
		if port == grpcPort {
			return nil, fmt.Errorf("export Endpoint %q: port 4317 is the collector's OTLP/gRPC port; BeTrace exports OTLP/HTTP, so use its port 4318 (or write http://%s if an OTLP/HTTP receiver really listens there)", shown, shown)
		}
		endpoint = "http://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		return nil, fmt.Errorf("export Endpoint %q: %w", shown, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("export Endpoint %q: scheme %q must be http or https", shown, u.Scheme)
	case u.Hostname() == "":
		return nil, fmt.Errorf("export Endpoint %q: no host", shown)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("export Endpoint %q: must not have a query or fragment", shown)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("export Endpoint %q: port %q is not a number from 1 to 65535", shown, p)
		}
	}
	return u.JoinPath("v1", "traces"), nil
}

// redact hides a password in an endpoint so that it can be logged or put in
// an error.
func redact(endpoint string) string {
	if strings.Contains(endpoint, "://") {
		if u, err := url.Parse(endpoint); err == nil {
			return u.Redacted()
		}
	}
	if i := strings.LastIndex(endpoint, "@"); i >= 0 {
		return "xxxxx" + endpoint[i:]
	}
	return endpoint
}
