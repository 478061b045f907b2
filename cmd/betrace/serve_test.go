package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"testing/fstest"
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
	cfg, _, _, _, err := loadConfig([]string{"--trace-settle", "1s"}, getenv, 0, io.Discard)
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
	_, _, _, _, err = loadConfig(nil, func(k string) string { return bad[k] }, 0, io.Discard)
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
			_, _, _, _, err := loadConfig(nil, func(key string) string { return env[key] }, 0, io.Discard)
			if err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%s=%q: %v, want an error naming %s", k, v, err, k)
			}
		}
	}
}

// In a container the memory defaults follow its limit, read from the
// cgroup files; set explicitly, they do not.
func TestMemoryDefaultsFollowTheContainer(t *testing.T) {
	cgroups := map[string]fstest.MapFS{
		"v2": {
			"proc/self/cgroup":                          {Data: []byte("0::/kubepods/pod1/c1\n")},
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": {Data: []byte("1073741824\n")},
		},
		"v2 mounted at the root": {
			"proc/self/cgroup":         {Data: []byte("0::/kubepods/pod1/c1\n")},
			"sys/fs/cgroup/memory.max": {Data: []byte("1073741824\n")},
		},
		"v1": {
			"proc/self/cgroup": {Data: []byte("12:cpu,cpuacct:/docker/x\n7:memory:/docker/x\n")},
			"sys/fs/cgroup/memory/docker/x/memory.limit_in_bytes": {Data: []byte("1073741824\n")},
		},
	}
	for name, fsys := range cgroups {
		if got := containerMemoryLimit(fsys); got != 1<<30 {
			t.Errorf("%s: limit %d, want 1 GiB", name, got)
		}
	}
	for name, fsys := range map[string]fstest.MapFS{
		"v2 unlimited": {"proc/self/cgroup": {Data: []byte("0::/\n")}, "sys/fs/cgroup/memory.max": {Data: []byte("max\n")}},
		"v1 unlimited": {"proc/self/cgroup": {Data: []byte("3:memory:/\n")}, "sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")}},
		"no cgroup":    {},
	} {
		if got := containerMemoryLimit(fsys); got != 0 {
			t.Errorf("%s: limit %d, want none", name, got)
		}
	}

	none := func(string) string { return "" }
	for _, tc := range []struct {
		name         string
		env          map[string]string
		container    int64
		heap, buffer int64
	}{
		{"no container", nil, 0, 768 << 20, 256 << 20},
		{"1 GiB container", nil, 1 << 30, 768 << 20, 256 << 20},
		{"512 MiB container", nil, 512 << 20, 384 << 20, 128 << 20},
		{"set explicitly", map[string]string{"BETRACE_MEMORY_LIMIT": "2GiB", "BETRACE_TRACE_BUFFER_BYTES": "64MiB"}, 512 << 20, 2 << 30, 64 << 20},
	} {
		getenv := none
		if tc.env != nil {
			getenv = func(k string) string { return tc.env[k] }
		}
		cfg, _, _, _, err := loadConfig(nil, getenv, tc.container, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if cfg.MemoryLimit != tc.heap || cfg.Traces.MaxBytes != tc.buffer {
			t.Errorf("%s: memory limit %d MiB, trace buffer %d MiB; want %d and %d", tc.name, cfg.MemoryLimit>>20, cfg.Traces.MaxBytes>>20, tc.heap>>20, tc.buffer>>20)
		}
	}
}
