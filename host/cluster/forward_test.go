package cluster

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/internal/bearer"
	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/traces"
)

func soloRouter(t *testing.T, token bearer.Token, sink Sink) *Router {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InstanceID, cfg.AdvertiseAddr = "solo", "solo:1"
	m, err := NewMembership(cfg, nil, quiet, prometheus.NewRegistry(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return NewRouter(ForwardConfig{Token: token}, m, sink, quiet, prometheus.NewRegistry())
}

func TestForwardHandlerAuthAndLimits(t *testing.T) {
	token, err := bearer.Parse("test", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	delivered := 0
	sink := func(_ context.Context, spans []traces.Span) error {
		mu.Lock()
		delivered += len(spans)
		mu.Unlock()
		return nil
	}
	body := abi.NewEncoder().Encode([]traces.Span{{TraceID: [16]byte{1}, SpanID: [8]byte{1}, Name: "a", Service: "svc"}}, 0)
	cases := []struct {
		name   string
		token  bearer.Token
		auth   string
		body   []byte
		status int
	}{
		{"no token configured refuses everyone", bearer.Token{}, "", body, http.StatusUnauthorized},
		{"no token configured refuses an empty bearer", bearer.Token{}, "Bearer ", body, http.StatusUnauthorized},
		{"missing credentials", token, "", body, http.StatusUnauthorized},
		{"wrong token", token, "Bearer nope", body, http.StatusUnauthorized},
		{"right token", token, "Bearer s3cret", body, http.StatusOK},
		{"scheme in any case", token, "bearer s3cret", body, http.StatusOK},
		{"garbage body", token, "Bearer s3cret", []byte("not spans"), http.StatusBadRequest},
		{"over the body limit", token, "Bearer s3cret", make([]byte, MaxForwardBody+1), http.StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := soloRouter(t, c.token, sink).Handler()
			req := httptest.NewRequest(http.MethodPost, ForwardPath, bytes.NewReader(c.body))
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
		})
	}
	if delivered != 2 {
		t.Fatalf("%d spans delivered, want the 2 of the authenticated valid requests", delivered)
	}
}

// A peer flooding the route gets 429s beyond forwardDecodes bodies at once,
// rather than every body held in memory together.
func TestForwardHandlerBoundsConcurrentBodies(t *testing.T) {
	token, _ := bearer.Parse("test", "s3cret")
	release := make(chan struct{})
	entered := make(chan struct{}, forwardDecodes)
	h := soloRouter(t, token, func(context.Context, []traces.Span) error {
		entered <- struct{}{}
		<-release
		return nil
	}).Handler()
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := abi.NewEncoder().Encode([]traces.Span{{TraceID: [16]byte{1}, SpanID: [8]byte{1}}}, 0)
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+ForwardPath, bytes.NewReader(body))
		req.Header.Set("Authorization", token.Header())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var wg sync.WaitGroup
	for range forwardDecodes {
		wg.Go(func() {
			if s := post(); s != http.StatusOK {
				t.Errorf("held request answered %d", s)
			}
		})
	}
	for range forwardDecodes {
		<-entered
	}
	if s := post(); s != http.StatusTooManyRequests {
		t.Fatalf("request beyond %d concurrent bodies answered %d, want 429", forwardDecodes, s)
	}
	close(release)
	wg.Wait()
}

// A batch whose encoding is over the split size is sent in parts, each
// accepted by the peer.
func TestForwardSplitsLargeBatches(t *testing.T) {
	token, _ := bearer.Parse("test", "s3cret")
	var mu sync.Mutex
	var requests, spans int
	recv := soloRouter(t, token, func(_ context.Context, s []traces.Span) error {
		mu.Lock()
		requests++
		spans += len(s)
		mu.Unlock()
		return nil
	})
	srv := httptest.NewServer(recv.Handler())
	defer srv.Close()
	send := soloRouter(t, token, nil)
	big := strings.Repeat("x", 1<<20)
	batch := make([]traces.Span, 40) // 40 MiB of names: over MaxForwardBody whole
	for i := range batch {
		batch[i] = traces.Span{TraceID: [16]byte{byte(i)}, SpanID: [8]byte{byte(i)}, Name: big}
	}
	if err := send.post(Member{ID: "peer", Addr: strings.TrimPrefix(srv.URL, "http://")}, batch); err != nil {
		t.Fatal(err)
	}
	if spans != len(batch) || requests < 3 {
		t.Fatalf("%d spans in %d requests, want %d spans split into at least 3", spans, requests, len(batch))
	}
}

func TestSharedToken(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	cfg := DefaultConfig()
	a, err := SharedToken(ctx, srv.Client(), cfg, bearer.Token{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := SharedToken(ctx, srv.Client(), cfg, bearer.Token{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Header() != b.Header() || len(a.Header()) < len("Bearer ")+64 {
		t.Fatalf("two instances got %q and %q, want one shared random token", a.Header(), b.Header())
	}
	srv.Client().Del(ctx, cfg.Prefix+TokenKey) // Redis lost its data
	held, err := SharedToken(ctx, srv.Client(), cfg, a)
	if err != nil || held.Header() != a.Header() {
		t.Fatalf("after Redis lost the token: %v, %q; want the held token stored again", err, held.Header())
	}
	cfg.Token = "configured"
	c, err := SharedToken(ctx, srv.Client(), cfg, bearer.Token{})
	if err != nil || c.Header() != "Bearer configured" {
		t.Fatalf("configured token: %v, %q", err, c.Header())
	}
	cfg.Token = "trailing\n"
	if _, err := SharedToken(ctx, srv.Client(), cfg, bearer.Token{}); err == nil || !strings.Contains(err.Error(), "BETRACE_CLUSTER_TOKEN") {
		t.Fatalf("token with a newline: %v, want an error naming BETRACE_CLUSTER_TOKEN", err)
	}
	srv.Client().Set(ctx, cfg.Prefix+TokenKey, "has space", 0)
	cfg.Token = ""
	if _, err := SharedToken(ctx, srv.Client(), cfg, bearer.Token{}); err == nil || !strings.Contains(err.Error(), "delete") {
		t.Fatalf("unusable stored token: %v, want an error saying what to do", err)
	}
}
