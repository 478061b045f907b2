package export

import (
	"net/http"
	"strings"
	"testing"
	"time"

	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		h    string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"99999999999999999", maxRetryAfter},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.h, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.h, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	e := &Exporter{backoffBase: time.Second, backoffMax: 30 * time.Second}
	for attempt := range 100 {
		hi := 30 * time.Second
		if attempt < 5 {
			hi = time.Second << attempt
		}
		for range 50 {
			if d := e.backoff(attempt); d < hi/2 || d > hi {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempt, d, hi/2, hi)
			}
		}
	}
}

func TestStatusError(t *testing.T) {
	pb, _ := proto.Marshal(&statuspb.Status{Code: 3, Message: "trace id is invalid"})
	tests := []struct {
		contentType string
		body        []byte
		want        string
	}{
		{"application/x-protobuf", pb, "400 Bad Request: trace id is invalid"},
		{"application/json", []byte(`{"code":3,"message":"bad json span"}`), "400 Bad Request: bad json span"},
		{"text/plain; charset=utf-8", []byte("plain words\n"), "400 Bad Request: plain words"},
		{"text/html", []byte("<html>"), "collector answered 400 Bad Request"},
		{"text/plain", []byte(strings.Repeat("x", 1000)), "…"},
	}
	for _, tt := range tests {
		resp := &http.Response{Status: "400 Bad Request", StatusCode: 400, Header: http.Header{"Content-Type": {tt.contentType}}}
		got := statusError(resp, tt.body).Error()
		if !strings.HasSuffix(got, tt.want) || len(got) > 400 {
			t.Errorf("%s: %q, want it to end %q", tt.contentType, got, tt.want)
		}
	}
}
