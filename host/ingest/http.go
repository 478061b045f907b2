package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/betracehq/betrace/host/traces"
)

// Media types of OTLP/HTTP.
const (
	contentTypeProto = "application/x-protobuf"
	contentTypeJSON  = "application/json"
)

// TracesHandler serves OTLP/HTTP trace export (POST /v1/traces) in protobuf
// and JSON, optionally gzip-compressed. Answers follow the OTLP/HTTP
// specification: 200 with an ExportTraceServiceResponse (carrying
// partial_success when spans were rejected) in the request's encoding;
// errors as a google.rpc.Status in the request's encoding; 429 or 503 with
// Retry-After when the sender should retry.
func (r *Receiver) TracesHandler() http.Handler { return http.HandlerFunc(r.serveTraces) }

// SpansHandler serves the legacy POST /v1/spans endpoint of earlier BeTrace
// servers; see the package documentation.
func (r *Receiver) SpansHandler() http.Handler { return http.HandlerFunc(r.serveSpans) }

func (r *Receiver) serveTraces(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	enc, known := otlpEncoding(req.Header.Get("Content-Type"))
	fail := func(f failure) {
		r.writeError(w, enc, f)
		r.observe(transportHTTP, f.outcome, start)
	}
	if f, ok := r.precheck(req); !ok {
		fail(f)
		return
	}
	if !known {
		fail(failure{http.StatusUnsupportedMediaType, codes.InvalidArgument, outcomeUnsupported, false,
			fmt.Sprintf("unsupported Content-Type %q: send %s or %s", req.Header.Get("Content-Type"), contentTypeProto, contentTypeJSON)})
		return
	}
	if err := r.acquire(req.Context()); err != nil {
		fail(classify(err))
		return
	}
	defer r.release()
	buf := r.pools.buffer()
	defer r.pools.putBuffer(buf)
	if f, ok := r.readBody(w, req, buf); !ok {
		fail(f)
		return
	}
	td, err := decodeOTLP(buf.Bytes(), enc)
	if err != nil {
		fail(classify(err))
		return
	}
	spans, rejected := Convert(nil, td, r.cfg.MaxSpanAttributes)
	res, err := r.deliver(req.Context(), spans, rejected)
	if err != nil {
		fail(classify(err))
		return
	}
	resp := ptraceotlp.NewExportResponse()
	if len(res.rejected) > 0 {
		resp.PartialSuccess().SetRejectedSpans(int64(len(res.rejected)))
		resp.PartialSuccess().SetErrorMessage(partialMessage(res.rejected))
	}
	var body []byte
	if enc == encodingProto {
		body, err = resp.MarshalProto()
	} else {
		body, err = resp.MarshalJSON()
	}
	if err != nil { // cannot happen for a response pdata built itself
		fail(classify(err))
		return
	}
	w.Header().Set("Content-Type", contentTypeOf(enc))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	r.observe(transportHTTP, res.outcome(), start)
}

// precheck answers requests refused before their body is read: a wrong
// method, a missing or wrong token, a receiver that is shutting down.
func (r *Receiver) precheck(req *http.Request) (failure, bool) {
	switch {
	case !r.authorized(req.Header.Get("Authorization")):
		return failure{http.StatusUnauthorized, codes.Unauthenticated, outcomeUnauthenticated, false,
			"missing or invalid bearer token: send the header \"Authorization: Bearer <token>\""}, false
	case req.Method != http.MethodPost:
		return failure{http.StatusMethodNotAllowed, codes.Unimplemented, outcomeMethod, false,
			fmt.Sprintf("method %s is not allowed: use POST", req.Method)}, false
	case r.closed.Load():
		return classify(fmt.Errorf("ingest spans: receiver is shutting down: %w", traces.ErrUnavailable)), false
	}
	return failure{}, true
}

// otlpEncoding maps a Content-Type to an OTLP encoding; known is false for
// anything else.
func otlpEncoding(contentType string) (enc encoding, known bool) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return encodingJSON, false
	}
	switch mt {
	case contentTypeProto, "application/protobuf":
		return encodingProto, true
	case contentTypeJSON:
		return encodingJSON, true
	}
	return encodingJSON, false
}

func contentTypeOf(enc encoding) string {
	if enc == encodingProto {
		return contentTypeProto
	}
	return contentTypeJSON
}

// readBody reads the request body into buf, decompressing gzip, with both
// the compressed and the decompressed size bounded by MaxRequestBytes.
func (r *Receiver) readBody(w http.ResponseWriter, req *http.Request, buf *bytes.Buffer) (failure, bool) {
	limit := r.cfg.MaxRequestBytes
	tooLarge := failure{http.StatusRequestEntityTooLarge, codes.ResourceExhausted, outcomeTooLarge, false,
		fmt.Sprintf("request body is larger than %d bytes (MaxRequestBytes): send smaller batches", limit)}
	if req.ContentLength > limit {
		return tooLarge, false
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, limit)
	switch ce := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding"))); ce {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := r.pools.gzip(body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return tooLarge, false
			}
			return failure{http.StatusBadRequest, codes.InvalidArgument, outcomeMalformed, false, "read gzip body: " + err.Error()}, false
		}
		defer r.pools.putGzip(zr)
		body = zr
	default:
		return failure{http.StatusUnsupportedMediaType, codes.InvalidArgument, outcomeUnsupported, false,
			fmt.Sprintf("unsupported Content-Encoding %q: send gzip or no encoding", ce)}, false
	}
	if req.ContentLength > 0 && req.ContentLength < 1<<20 {
		buf.Grow(int(req.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(body, limit+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe), n > limit:
		return tooLarge, false
	case err != nil:
		return failure{http.StatusBadRequest, codes.InvalidArgument, outcomeMalformed, false, "read request body: " + err.Error()}, false
	}
	return failure{}, true
}

// writeError answers f as a google.rpc.Status in the request's encoding, with
// Retry-After when the sender should retry.
func (r *Receiver) writeError(w http.ResponseWriter, enc encoding, f failure) {
	h := w.Header()
	if f.retry {
		h.Set("Retry-After", strconv.FormatInt(r.retryAfterSeconds(), 10))
	}
	switch f.status {
	case http.StatusMethodNotAllowed:
		h.Set("Allow", http.MethodPost)
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="betrace"`)
	}
	if enc == encodingProto {
		b, err := proto.Marshal(&spb.Status{Code: int32(f.code), Message: f.msg})
		if err == nil {
			h.Set("Content-Type", contentTypeProto)
			w.WriteHeader(f.status)
			_, _ = w.Write(b)
			return
		}
	}
	writeJSONError(w, f)
}

// jsonStatus is google.rpc.Status in JSON, also the error body of every
// BeTrace HTTP API.
type jsonStatus struct {
	Code    int32    `json:"code"`
	Message string   `json:"message"`
	Details []string `json:"details"`
}

func writeJSONError(w http.ResponseWriter, f failure) {
	writeJSON(w, f.status, jsonStatus{Code: int32(f.code), Message: f.msg, Details: []string{}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":13,"message":"encode response","details":[]}`)
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// pools recycles request bodies and gzip readers. Bodies above maxPooled
// are left to the garbage collector so one huge request does not pin memory.
type pools struct {
	buffers sync.Pool
	gzips   sync.Pool
}

const maxPooled = 1 << 20

func (p *pools) buffer() *bytes.Buffer {
	if b, ok := p.buffers.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (p *pools) putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooled {
		return
	}
	b.Reset()
	p.buffers.Put(b)
}

func (p *pools) gzip(r io.Reader) (*gzip.Reader, error) {
	if zr, ok := p.gzips.Get().(*gzip.Reader); ok {
		if err := zr.Reset(r); err != nil {
			p.gzips.Put(zr)
			return nil, err
		}
		return zr, nil
	}
	return gzip.NewReader(r)
}

func (p *pools) putGzip(zr *gzip.Reader) { p.gzips.Put(zr) }
