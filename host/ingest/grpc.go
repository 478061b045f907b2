package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/betracehq/betrace/host/traces"
)

// The OTLP trace service, registered by hand (see grpcCodec).
const (
	traceService = "opentelemetry.proto.collector.trace.v1.TraceService"
	exportMethod = "/" + traceService + "/Export"
)

// Bounds of the gRPC server beyond Config.
const (
	// grpcMaxStreams bounds the calls in progress on one connection.
	// Default 100, the HTTP/2 specification's recommended minimum; OTLP
	// exporters run a handful.
	grpcMaxStreams = 100
	// grpcMaxIdle closes a connection with no call for this long, as the
	// HTTP server's IdleTimeout does; clients reconnect on their next
	// export. Default 2m.
	grpcMaxIdle = 2 * time.Minute
)

// newGRPCServer builds the OTLP/gRPC server: messages bounded by
// MaxRequestBytes (decompressed) and by the time MinReadRate allows them,
// gzip accepted, the trace service registered with grpcCodec.
func (r *Receiver) newGRPCServer() *grpc.Server {
	s := grpc.NewServer(
		grpc.MaxRecvMsgSize(int(r.cfg.MaxRequestBytes)),
		grpc.ForceServerCodecV2(grpcCodec{}),
		grpc.MaxConcurrentStreams(grpcMaxStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: grpcMaxIdle}),
		grpc.InTapHandle(r.receiveDeadline),
	)
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: traceService,
		HandlerType: (*exporter)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Export",
			Handler:    exportHandler,
		}},
		Metadata: "opentelemetry/proto/collector/trace/v1/trace_service.proto",
	}, r)
	return s
}

// receiveDeadline bounds each call by the time MinReadRate allows the
// largest message. grpc-go has no read timeout: without it a sender that
// stops halfway through a message holds its stream, goroutine and the
// bytes sent so far for as long as the connection lives. The stream's own
// context (which the message is read under) becomes this one; the
// transport cancels its parent when the stream ends, which also ends this
// one's timer.
func (r *Receiver) receiveDeadline(ctx context.Context, _ *tap.Info) (context.Context, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, r.cfg.maxReceiveTime(), errTooSlow)
	context.AfterFunc(ctx, cancel)
	return ctx, nil
}

type exporter interface {
	exportGRPC(ctx context.Context, dec func(any) error) (any, error)
}

func exportHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	e := srv.(exporter)
	if interceptor == nil {
		return e.exportGRPC(ctx, dec)
	}
	// No interceptor is installed today; honour one if it ever is, decoding
	// inside the handler so the interceptor sees the call first.
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: exportMethod}
	return interceptor(ctx, nil, info, func(ctx context.Context, _ any) (any, error) { return e.exportGRPC(ctx, dec) })
}

// grpcRequest is what grpcCodec decodes an ExportTraceServiceRequest into: the
// traces, or the reason they could not be decoded.
type grpcRequest struct {
	td  ptrace.Traces
	err error
}

// grpcResponse is an already encoded ExportTraceServiceResponse.
type grpcResponse []byte

// grpcCodec decodes requests with pdata, like ptraceotlp.RegisterGRPCServer
// does, but reports a malformed request to the handler instead of failing in
// the codec: gRPC turns every codec error into INTERNAL, while a malformed
// request must be INVALID_ARGUMENT (not retryable) with a message naming the
// bad field, as OTLP/HTTP answers it.
type grpcCodec struct{}

func (grpcCodec) Name() string { return "proto" }

func (grpcCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*grpcResponse)
	if !ok {
		return nil, fmt.Errorf("encode gRPC message: unexpected type %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (grpcCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*grpcRequest)
	if !ok {
		return fmt.Errorf("decode gRPC message: unexpected type %T", v)
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData() // pdata copies what it keeps
	} else {
		b = data.Materialize()
	}
	req.td, req.err = decodeOTLP(b, encodingProto)
	return nil
}

func (r *Receiver) exportGRPC(ctx context.Context, dec func(any) error) (any, error) {
	start := time.Now()
	fail := func(f failure) (any, error) {
		r.observe(transportGRPC, f.outcome, start)
		return nil, r.grpcStatus(f)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var auth string
	if v := md.Get("authorization"); len(v) > 0 {
		auth = v[0]
	}
	if !r.authorized(auth) {
		return fail(failure{code: codes.Unauthenticated, outcome: outcomeUnauthenticated,
			msg: `missing or invalid bearer token: send the metadata "authorization: Bearer <token>"`})
	}
	if r.closed.Load() {
		return fail(classify(fmt.Errorf("ingest spans: receiver is shutting down: %w", traces.ErrUnavailable)))
	}
	// grpc-go (since 1.7x) calls a unary handler before the message has
	// arrived and reads it in dec; dec must run before the slot is taken,
	// or a slow sender holds a slot.
	var req grpcRequest
	if err := dec(&req); err != nil {
		return fail(r.recvFailure(ctx, err))
	}
	if req.err != nil {
		return fail(classify(req.err))
	}
	if err := r.acquire(ctx); err != nil {
		return fail(classify(err))
	}
	defer r.release()
	spans, rejected, done := r.pools.convert(req.td, r.limits())
	res, err := r.deliver(ctx, spans, rejected)
	done()
	if err != nil {
		return fail(classify(err))
	}
	resp := ptraceotlp.NewExportResponse()
	if len(res.rejected) > 0 {
		resp.PartialSuccess().SetRejectedSpans(int64(len(res.rejected)))
		resp.PartialSuccess().SetErrorMessage(partialMessage(res.rejected))
	}
	b, err := resp.MarshalProto()
	if err != nil {
		return fail(classify(err))
	}
	r.observe(transportGRPC, res.outcome(), start)
	out := grpcResponse(b)
	return &out, nil
}

// recvFailure answers an error from receiving the request message.
func (r *Receiver) recvFailure(ctx context.Context, err error) failure {
	if errors.Is(context.Cause(ctx), errTooSlow) {
		return failure{code: codes.DeadlineExceeded, outcome: outcomeTooSlow,
			msg: fmt.Sprintf("%v: the message did not arrive within %v (ReadGrace + MaxRequestBytes/MinReadRate): send faster or smaller batches",
				errTooSlow, r.cfg.maxReceiveTime())}
	}
	if ctx.Err() != nil {
		return classify(ctx.Err())
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		// grpc-go's own refusals (a message over MaxRecvMsgSize is
		// RESOURCE_EXHAUSTED) keep their code.
		f := failure{code: st.Code(), outcome: outcomeMalformed, msg: st.Message()}
		if st.Code() == codes.ResourceExhausted {
			f.outcome = outcomeTooLarge
		}
		return f
	}
	return classify(fmt.Errorf("%w: %v", ErrMalformed, err))
}

// grpcStatus turns a failure into a gRPC status, with RetryInfo when the
// sender should retry (OTLP exporters retry RESOURCE_EXHAUSTED only then).
func (r *Receiver) grpcStatus(f failure) error {
	st := status.New(f.code, f.msg)
	if f.retry {
		if d, err := st.WithDetails(protoadapt.MessageV1Of(&errdetails.RetryInfo{RetryDelay: durationpb.New(r.cfg.RetryAfter)})); err == nil {
			st = d
		}
	}
	return st.Err()
}
