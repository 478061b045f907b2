package export

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	want := Config{QueueSize: 10000, BatchSize: 512, FlushInterval: time.Second, Timeout: 10 * time.Second, MaxRetryTime: 5 * time.Minute}
	if c != want {
		t.Errorf("DefaultConfig() = %+v, want %+v", c, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none means valid
	}{
		{"disabled", func(c *Config) { c.Endpoint = "" }, nil},
		{"host:port", func(c *Config) { c.Endpoint = "collector:4318" }, nil},
		{"no retries", func(c *Config) { c.MaxRetryTime = 0 }, nil},
		{"grpc port", func(c *Config) { c.Endpoint = "collector:4317" }, []string{"Endpoint", "4317", "4318"}},
		{"bad endpoint", func(c *Config) { c.Endpoint = "collector" }, []string{"Endpoint", "host:port"}},
		{"queue", func(c *Config) { c.QueueSize = 0 }, []string{"QueueSize 0"}},
		{"batch", func(c *Config) { c.BatchSize = -1 }, []string{"BatchSize -1"}},
		{"flush", func(c *Config) { c.FlushInterval = 0 }, []string{"FlushInterval"}},
		{"timeout", func(c *Config) { c.Timeout = -time.Second }, []string{"Timeout"}},
		{"retry", func(c *Config) { c.MaxRetryTime = -1 }, []string{"MaxRetryTime"}},
		{"all at once", func(c *Config) { *c = Config{Endpoint: "ftp://x:1"} },
			[]string{"Endpoint", "QueueSize", "BatchSize", "FlushInterval", "Timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to name %q", err, w)
				}
			}
		})
	}
}

func TestTracesURL(t *testing.T) {
	tests := []struct{ endpoint, want string }{
		{"collector:4318", "http://collector:4318/v1/traces"},
		{"127.0.0.1:9999", "http://127.0.0.1:9999/v1/traces"},
		{"[::1]:4318", "http://[::1]:4318/v1/traces"},
		{"http://collector:4318", "http://collector:4318/v1/traces"},
		{"http://collector:4318/", "http://collector:4318/v1/traces"},
		{"https://otel.example.com", "https://otel.example.com/v1/traces"},
		{"https://otel.example.com/otlp/", "https://otel.example.com/otlp/v1/traces"},
		{"http://collector:4317", "http://collector:4317/v1/traces"}, // explicit: taken at its word
	}
	for _, tt := range tests {
		u, err := tracesURL(tt.endpoint)
		if err != nil {
			t.Errorf("tracesURL(%q): %v", tt.endpoint, err)
			continue
		}
		if u.String() != tt.want {
			t.Errorf("tracesURL(%q) = %s, want %s", tt.endpoint, u, tt.want)
		}
	}
	for _, bad := range []string{
		"collector", ":4318", "collector:0", "collector:http", "collector:70000", "collector:4317",
		"ftp://collector:21", "http://", "http://collector:4318/?a=b", "http://collector:4318#x",
		"http://collector:99999", "http://[::1",
	} {
		if u, err := tracesURL(bad); err == nil {
			t.Errorf("tracesURL(%q) = %s, want an error", bad, u)
		}
	}
}

func TestEndpointPasswordHidden(t *testing.T) {
	for _, ep := range []string{"ftp://user:hunter2@collector:21", "http://user:hunter2@[::1", "user:hunter2@collector"} {
		err := Config{Endpoint: ep, QueueSize: 1, BatchSize: 1, FlushInterval: 1, Timeout: 1}.Validate()
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Validate(%q) = %v, want an error without the password", ep, err)
		}
	}
	if got := redact("https://user:hunter2@collector:4318"); strings.Contains(got, "hunter2") {
		t.Errorf("redact = %q", got)
	}
}
