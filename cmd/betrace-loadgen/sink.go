package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// The decode-only sink is the ceiling BeTrace is measured against: an
// OTLP/HTTP endpoint that reads each request and decodes it with pdata, as
// BeTrace's receiver does, then discards it. Whatever BeTrace does beyond
// that (assembling, evaluating, storing) is the gap between the two.

// serveSink runs the sink on addr until the process is stopped.
func serveSink(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = req.Traces().SpanCount()
		w.Header().Set("Content-Type", "application/x-protobuf")
		resp, _ := ptraceotlp.NewExportResponse().MarshalProto()
		w.Write(resp)
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	return http.ListenAndServe(addr, mux)
}

// sinkProcess is a sink started as a child process, so its CPU is its own.
type sinkProcess struct {
	cmd  *exec.Cmd
	base string
}

func spawnSink() (*sinkProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", port)
	cmd := exec.Command(self, "-sink-listen", addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the decode-only sink: %w", err)
	}
	s := &sinkProcess{cmd: cmd, base: "http://" + addr}
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(s.base + "/ready"); err == nil {
			resp.Body.Close()
			return s, nil
		}
	}
	s.stop()
	return nil, errors.New("the decode-only sink did not start within 10s")
}

func (s *sinkProcess) stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// cpuSeconds reads the user and system CPU time of process pid (Linux).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the CPU time of process %d (needs Linux /proc): %w", pid, err)
	}
	// Fields after the command name, which may hold spaces, in parentheses.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const ticks = 100 // USER_HZ on Linux
	return (utime + stime) / ticks, nil
}
