package ingest

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/betracehq/betrace/host/traces"
)

type grpcFixture struct {
	r      *Receiver
	rec    *recorder
	reg    *prometheus.Registry
	conn   *grpc.ClientConn
	client ptraceotlp.GRPCClient
}

// newGRPCFixture starts a receiver on a real loopback listener and connects
// a pdata OTLP client to it.
func newGRPCFixture(t testing.TB, cfg Config) *grpcFixture {
	t.Helper()
	f := &grpcFixture{rec: &recorder{}, reg: prometheus.NewRegistry()}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.GRPCAddr = ""
	f.r, err = New(cfg, f.rec.sink, Settings{Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	f.r.lis = lis
	if err := f.r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.conn, err = grpc.NewClient(f.r.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	f.client = ptraceotlp.NewGRPCClient(f.conn)
	t.Cleanup(func() {
		f.conn.Close()
		if err := f.r.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return f
}

func (f *grpcFixture) export(ctx context.Context, n, attrs int, opts ...grpc.CallOption) (ptraceotlp.ExportResponse, error) {
	return f.client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(makeTraces(n, attrs)), opts...)
}

func TestOTLPGRPC(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []grpc.CallOption
	}{
		{"plain", nil},
		{"gzip", []grpc.CallOption{grpc.UseCompressor(gzip.Name)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newGRPCFixture(t, DefaultConfig())
			resp, err := f.export(context.Background(), 40, 10, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.PartialSuccess().RejectedSpans() != 0 {
				t.Fatalf("rejected %d", resp.PartialSuccess().RejectedSpans())
			}
			if f.rec.count() != 40 || f.rec.spans[39].Name != "GET /api/items/4" || len(f.rec.spans[39].Attrs) != 10 {
				t.Fatalf("sink got %d spans", f.rec.count())
			}
			if got := value(t, f.reg, "betrace_ingest_requests_total", "transport", "otlp_grpc", "outcome", "ok"); got != 1 {
				t.Fatalf("requests{otlp_grpc, ok} = %v", got)
			}
		})
	}
}

func TestOTLPGRPCPartialSuccess(t *testing.T) {
	f := newGRPCFixture(t, DefaultConfig())
	td := makeTraces(5, 1)
	spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	spans.At(2).SetName("")
	spans.At(4).SetSpanID([8]byte{})
	resp, err := f.client.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(td))
	if err != nil {
		t.Fatal(err)
	}
	ps := resp.PartialSuccess()
	if ps.RejectedSpans() != 2 || !strings.Contains(ps.ErrorMessage(), "span 2: span has an empty name") ||
		!strings.Contains(ps.ErrorMessage(), "span 4: span has an empty span ID") {
		t.Fatalf("partial success %d %q", ps.RejectedSpans(), ps.ErrorMessage())
	}
	if f.rec.count() != 3 {
		t.Fatalf("sink got %d", f.rec.count())
	}
}

// rawCodec lets a test send bytes pdata would never produce.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func TestOTLPGRPCErrors(t *testing.T) {
	small := DefaultConfig()
	small.MaxRequestBytes = 4096
	tests := []struct {
		name    string
		cfg     Config
		sinkErr error
		call    func(f *grpcFixture) error
		code    codes.Code
		retry   bool
		msg     string
	}{
		{"buffer full", DefaultConfig(), fmt.Errorf("add: %w", traces.ErrFull), nil, codes.ResourceExhausted, true, "trace buffer is full"},
		{"unavailable", DefaultConfig(), traces.ErrUnavailable, nil, codes.Unavailable, true, "unavailable"},
		{"sink failure", DefaultConfig(), fmt.Errorf("disk on fire"), nil, codes.Internal, false, "disk on fire"},
		{"too large", small, nil, func(f *grpcFixture) error { _, err := f.export(context.Background(), 200, 10); return err },
			codes.ResourceExhausted, false, "larger than max"},
		{"too large after gunzip", small, nil, func(f *grpcFixture) error {
			_, err := f.export(context.Background(), 200, 10, grpc.UseCompressor(gzip.Name))
			return err
		}, codes.ResourceExhausted, false, "larger than max"},
		{"malformed", DefaultConfig(), nil, func(f *grpcFixture) error {
			in, out := badIDProto(), []byte(nil)
			return f.conn.Invoke(context.Background(), exportMethod, &in, &out, grpc.ForceCodecV2(rawCodec{}))
		}, codes.InvalidArgument, false, "resource_spans[0].scope_spans[0].spans[1].trace_id: 15 bytes, want 16"},
		{"garbage", DefaultConfig(), nil, func(f *grpcFixture) error {
			in, out := []byte("\x0a\xff\xff\xff"), []byte(nil)
			return f.conn.Invoke(context.Background(), exportMethod, &in, &out, grpc.ForceCodecV2(rawCodec{}))
		}, codes.InvalidArgument, false, "decode OTLP/protobuf request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newGRPCFixture(t, tt.cfg)
			f.rec.err = tt.sinkErr
			call := tt.call
			if call == nil {
				call = func(f *grpcFixture) error { _, err := f.export(context.Background(), 3, 1); return err }
			}
			st, _ := status.FromError(call(f))
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			var retry *errdetails.RetryInfo
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok {
					retry = ri
				}
			}
			if (retry != nil) != tt.retry || retry != nil && retry.RetryDelay.AsDuration() != time.Second {
				t.Fatalf("RetryInfo %v, want present=%v with 1s", retry, tt.retry)
			}
		})
	}
}

func TestAuthGRPC(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Token = "s3cret-token"
	f := newGRPCFixture(t, cfg)
	for _, tt := range []struct {
		md   []string
		code codes.Code
	}{
		{nil, codes.Unauthenticated},
		{[]string{"authorization", "Bearer wrong"}, codes.Unauthenticated},
		{[]string{"authorization", "s3cret-token"}, codes.Unauthenticated},
		{[]string{"authorization", "Bearer s3cret-token"}, codes.OK},
	} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), tt.md...)
		_, err := f.export(ctx, 2, 1)
		if st, _ := status.FromError(err); st.Code() != tt.code {
			t.Fatalf("metadata %v: %v, want %v", tt.md, err, tt.code)
		}
	}
	if f.rec.count() != 2 {
		t.Fatalf("sink got %d spans, want only the authorized 2", f.rec.count())
	}
}

func TestGRPCLifecycle(t *testing.T) {
	base := runtime.NumGoroutine()
	f := newGRPCFixture(t, DefaultConfig())
	if _, err := f.export(context.Background(), 3, 1); err != nil {
		t.Fatal(err)
	}
	f.conn.Close()
	if err := f.r.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	if err := f.r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}

	r, err := New(Config{GRPCAddr: "127.0.0.1:0", MaxRequestBytes: 1, MaxSpanAttributes: 1, MaxResourceAttributes: 1,
		MaxConcurrentRequests: 1, MaxBufferedBytes: 1, MinReadRate: 1, ReadGrace: 1, RetryAfter: 1}, (&recorder{}).sink, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown without Start: %v", err)
	}
	if err := r.Start(context.Background()); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
}

func TestGRPCListen(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := DefaultConfig()
	cfg.GRPCAddr = addr
	r, err := New(cfg, (&recorder{}).sink, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	defer r.Shutdown(context.Background())
	if r.GRPCAddr() != addr {
		t.Fatalf("listening on %s, want %s", r.GRPCAddr(), addr)
	}
	busy, err := New(cfg, (&recorder{}).sink, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if err := busy.Start(context.Background()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second listener on the same port: %v", err)
	}
}
