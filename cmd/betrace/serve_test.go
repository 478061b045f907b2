package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// TestREADMEDocumentsEverySetting keeps the README's configuration table in
// step with the options table that drives the flags and environment.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range options() {
		row := "| `" + o.env + "` | `--" + o.flag + "` |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no configuration row starting %q", row)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	env := map[string]string{
		"BETRACE_PORT_BACKEND":   "13000",
		"BETRACE_OTLP_GRPC_PORT": "0",
		"BETRACE_TRACE_SETTLE":   "250ms",
		"BETRACE_TRACE_MAX_AGE":  "10s",
		"BETRACE_API_TOKEN":      "s3cret",
	}
	getenv := func(k string) string { return env[k] }
	cfg, _, _, _, err := loadConfig([]string{"--trace-settle", "1s"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":13000" || cfg.Ingest.GRPCAddr != "" || cfg.Traces.Settle.String() != "1s" || cfg.APIToken != "s3cret" ||
		cfg.Traces.LateWindow.String() != "20s" {
		t.Fatalf("config %+v", cfg)
	}

	bad := map[string]string{
		"BETRACE_PORT_BACKEND":       "http",
		"BETRACE_TRACE_IDLE_TIMEOUT": "-1s",
		"BETRACE_TRACE_MAX_SPANS":    "lots",
		"LOG_LEVEL":                  "chatty",
	}
	_, _, _, _, err = loadConfig(nil, func(k string) string { return bad[k] }, io.Discard)
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for k := range bad {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %s: %v", k, err)
		}
	}
}

// A token that cannot survive an Authorization header unchanged is refused
// at start-up, naming the setting, rather than turning every call into 401.
func TestLoadConfigRefusesUnusableTokens(t *testing.T) {
	for _, k := range []string{"BETRACE_API_TOKEN", "BETRACE_INGEST_TOKEN", "BETRACE_CLUSTER_TOKEN"} {
		for _, v := range []string{"s3cret\n", "two words", "tab\there"} {
			env := map[string]string{k: v, "BETRACE_REDIS_URL": "redis://127.0.0.1:1/0"}
			_, _, _, _, err := loadConfig(nil, func(key string) string { return env[key] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%s=%q: %v, want an error naming %s", k, v, err, k)
			}
		}
	}
}
