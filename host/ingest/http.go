package ingest

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
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
	r.bodyDeadline(w, start)
	if f, ok := r.precheck(req); !ok {
		fail(f)
		return
	}
	if !known {
		fail(failure{http.StatusUnsupportedMediaType, codes.InvalidArgument, outcomeUnsupported, false,
			fmt.Sprintf("unsupported Content-Type %q: send %s or %s", req.Header.Get("Content-Type"), contentTypeProto, contentTypeJSON)})
		return
	}
	var b body
	defer r.free(&b)
	if f, ok := r.readBody(w, req, start, &b); !ok {
		fail(f)
		return
	}
	if err := r.acquire(req.Context()); err != nil {
		fail(classify(err))
		return
	}
	defer r.release()
	td, err := decodeOTLP(b.b, enc)
	if err != nil {
		fail(classify(err))
		return
	}
	spans, rejected, done := r.pools.convert(td, r.limits())
	res, err := r.deliver(req.Context(), spans, rejected)
	done()
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

// bodyDeadline gives the request ReadGrace to start its body, so that even a
// body left unread (the request refused on its headers) is not drained at
// the sender's pace when the server discards it.
func (r *Receiver) bodyDeadline(w http.ResponseWriter, start time.Time) {
	_ = http.NewResponseController(w).SetReadDeadline(start.Add(r.cfg.ReadGrace))
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
