package cluster

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
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

func soloRouter(t *testing.T, token bearer.Token, sink traces.Sink) *Router {
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
	if err := send.post(Member{ID: "peer", Addr: strings.TrimPrefix(srv.URL, "http://")}, batch, false); err != nil {
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

// TestRouterFollowsViewChanges: spans queued for a member that died are
// rerouted the moment the view without it takes effect, however long the
// sender would otherwise back off; and a member passes on what reaches it
// for a partition it does not own.
func TestRouterFollowsViewChanges(t *testing.T) {
	srv := redistest.Start(t)
	clock := &fakeClock{t: time.Now()}
	token, _ := bearer.Parse("test", "s3cret")
	cfg := DefaultConfig()
	cfg.Heartbeat, cfg.MemberTTL, cfg.Timeout, cfg.Prefix = time.Hour, 3*time.Hour, time.Second, "f:"
	ctx := context.Background()

	type node struct {
		m    *Membership
		r    *Router
		mu   sync.Mutex
		got  map[[16]byte]int // spans taken whole
		frag map[[16]byte]int // spans taken as parts of fragments
		http *httptest.Server
	}
	start := func(id string, listen bool) *node {
		n := &node{got: map[[16]byte]int{}, frag: map[[16]byte]int{}}
		addr := "127.0.0.1:1" // refuses connections: a member that died
		if listen {
			var h http.Handler
			n.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { h.ServeHTTP(w, req) }))
			t.Cleanup(n.http.Close)
			addr = strings.TrimPrefix(n.http.URL, "http://")
			defer func() { h = n.r.Handler() }()
		}
		c := cfg
		c.InstanceID, c.AdvertiseAddr = id, addr
		m, err := NewMembership(c, srv.Client(), quiet, prometheus.NewRegistry(), clock.now)
		if err != nil {
			t.Fatal(err)
		}
		n.m = m
		// A first retry an hour away: only the view change can move the spans.
		sink := func(into map[[16]byte]int) traces.Sink {
			return func(_ context.Context, spans []traces.Span) error {
				n.mu.Lock()
				defer n.mu.Unlock()
				for _, s := range spans {
					into[s.TraceID]++
				}
				return nil
			}
		}
		n.r = NewRouter(ForwardConfig{Token: token, RetryBackoff: time.Hour, MaxBackoff: time.Hour, IdleTimeout: time.Second}, m, sink(n.got), quiet, prometheus.NewRegistry())
		n.r.SetFragmentSink(sink(n.frag))
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			n.r.Shutdown(ctx)
			m.Leave(ctx)
		})
		return n
	}
	switchOver := func(ns ...*node) {
		for _, n := range ns {
			if err := n.m.beat(ctx); err != nil {
				t.Fatal(err)
			}
		}
		views := *ns[0].m.views.Load()
		clock.mu.Lock()
		if s := views[len(views)-1].Start; s.After(clock.t) {
			clock.t = s
		}
		clock.mu.Unlock()
		for _, n := range ns {
			n.m.adopt()
		}
	}
	a, b := start("a", true), start("b", true)
	c := start("c", false)
	switchOver(a, b, c)
	if n := len(a.m.View().Members); n != 3 {
		t.Fatalf("a sees %d members", n)
	}
	ownedBy := func(id string) [16]byte {
		for p := range Partitions {
			tid := idInPartition(p)
			if o, _ := a.m.View().Owner(tid); o.ID == id {
				return tid
			}
		}
		t.Fatalf("%s owns no partition", id)
		return [16]byte{}
	}
	count := func(n *node, id [16]byte) int {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.got[id]
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// A span for b's partition posted to a is passed on to b.
	toB := ownedBy("b")
	body := abi.NewEncoder().Encode([]traces.Span{{TraceID: toB, SpanID: [8]byte{1}, Name: "x"}}, 0)
	req, _ := http.NewRequest(http.MethodPost, a.http.URL+ForwardPath, bytes.NewReader(body))
	req.Header.Set("Authorization", token.Header())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forwarded request: status %d", resp.StatusCode)
	}
	waitFor("a did not pass on a span of b's partition", func() bool { return count(b, toB) == 1 && count(a, toB) == 0 })
	// From b itself: routed by an older view, the span goes back to b, the
	// owner now; routed by the view a has, the two disagree only for a
	// moment and a keeps it rather than bounce it.
	fromB := func(epoch uint64) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, a.http.URL+ForwardPath, bytes.NewReader(body))
		req.Header.Set("Authorization", token.Header())
		req.Header.Set(fromHeader, "b")
		req.Header.Set(epochHeader, strconv.FormatUint(epoch, 10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("forwarded request: status %d", resp.StatusCode)
		}
	}
	fromB(a.m.View().Epoch - 1)
	waitFor("a kept a span b routed by an older view", func() bool { return count(b, toB) == 2 && count(a, toB) == 0 })
	fromB(a.m.View().Epoch)
	if count(a, toB) != 1 {
		t.Fatalf("a did not keep a span b routed by the same view: %d", count(a, toB))
	}

	// Spans for c's partition queue on a while c is unreachable.
	toC := ownedBy("c")
	if err := a.r.Route(ctx, []traces.Span{{TraceID: toC, SpanID: [8]byte{2}, Name: "y"}, {TraceID: toC, SpanID: [8]byte{3}, Name: "z"}}); err != nil {
		t.Fatal(err)
	}
	waitFor("a never found c gone", func() bool {
		c, _ := a.m.contact.Load(c.m.View().Members[2])
		return c != nil && c.(*contact).failed.Load() != 0
	})
	// More than an idle timeout after c was found gone, a span queued for
	// it cannot belong to a trace c held spans of.
	clock.add(2 * time.Second)
	var later [16]byte
	for p := range Partitions {
		if o, _ := a.m.View().Owner(idInPartition(p)); o.ID == "c" && idInPartition(p) != toC {
			later = idInPartition(p)
			break
		}
	}
	if err := a.r.Route(ctx, []traces.Span{{TraceID: later, SpanID: [8]byte{4}, Name: "w"}}); err != nil {
		t.Fatal(err)
	}
	total := func(id [16]byte) int {
		n := 0
		for _, x := range []*node{a, b} {
			x.mu.Lock()
			n += x.got[id] + x.frag[id]
			x.mu.Unlock()
		}
		return n
	}
	if total(toC)+total(later) != 0 {
		t.Fatal("spans for an unreachable member were delivered elsewhere before any view change")
	}
	// c's entry expires; the view without it takes effect on a and b.
	clock.add(cfg.MemberTTL / 2)
	switchOver(a, b)
	clock.add(cfg.MemberTTL/2 + time.Millisecond)
	switchOver(a, b)
	if v := a.m.View(); len(v.Members) != 2 || !slices.Equal(v.Lost, []string{"c"}) {
		t.Fatalf("after c expired a sees %v, lost %v", v.Members, v.Lost)
	}
	waitFor("the spans queued for c were not rerouted at the view change", func() bool { return total(toC) == 2 && total(later) == 1 })
	heirOf := func(id [16]byte) *node {
		if _, self := b.m.View().Owner(id); self {
			return b
		}
		return a
	}
	if h := heirOf(toC); h.frag[toC] != 2 {
		t.Errorf("spans queued while c may have held their trace: %d of 2 reached the heir as fragments", h.frag[toC])
	}
	if h := heirOf(later); h.got[later] != 1 {
		t.Errorf("a span queued long after c was found gone did not reach the heir whole: %d whole, %d as a fragment", h.got[later], h.frag[later])
	}
	// a found c gone: its own traces open around that moment are fragments,
	// whatever their partition; traces first seen later than an idle
	// timeout after it are not.
	gone := time.UnixMilli(func() int64 { c, _ := a.m.contact.Load(c.m.View().Members[2]); return c.(*contact).failed.Load() }())
	toA := ownedBy("a")
	if !a.m.Fragment(toA, gone.Add(-100*time.Millisecond), gone.Add(time.Second), time.Second) {
		t.Error("a trace open on a when it found c gone is not a fragment")
	}
	if a.m.Fragment(toA, gone.Add(1500*time.Millisecond), gone.Add(3*time.Second), time.Second) {
		t.Error("a trace first seen well after c was found gone is a fragment")
	}
}
