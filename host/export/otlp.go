package export

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/betracehq/betrace/host/violations"
)

// What a violation span looks like on the wire.
const (
	spanName    = "betrace.violation"
	scopeName   = "github.com/betracehq/betrace"
	serviceName = "betrace"

	attrViolation = "betrace.violation"
	attrRuleID    = "betrace.violation.rule_id"
	attrRuleName  = "betrace.violation.rule_name"
	attrSeverity  = "betrace.violation.severity"
	attrMessage   = "betrace.violation.message"
	attrID        = "betrace.violation.id"
	attrTraceID   = "betrace.violation.trace_id"
	attrTrigger   = "betrace.violation.trigger"
	attrPrefix    = "betrace.violation.attr."
)

// toTraces builds one request's spans: one resource, one scope, one span
// per violation. now stands in for a missing timestamp.
func toTraces(batch []violations.Violation, instanceID string, now time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	res := rs.Resource().Attributes()
	res.PutStr("service.name", serviceName)
	if instanceID != "" {
		res.PutStr("service.instance.id", instanceID)
	}
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName(scopeName)
	spans := ss.Spans()
	spans.EnsureCapacity(len(batch))
	for i := range batch {
		fillSpan(spans.AppendEmpty(), &batch[i], now)
	}
	return td
}

// fillSpan makes sp the span of one violation: a child of the offending
// span, in the offending trace.
func fillSpan(sp ptrace.Span, v *violations.Violation, now time.Time) {
	sp.SetName(spanName)
	sp.SetKind(ptrace.SpanKindInternal)
	if id, ok := parseTraceID(v.TraceID); ok {
		sp.SetTraceID(id)
		if parent, ok := parseSpanID(v.SpanID); ok {
			sp.SetParentSpanID(parent)
		}
	} else {
		// A span cannot be sent without a trace ID. The violation still
		// is, in a trace of its own; its trace_id attribute keeps the text.
		sp.SetTraceID(newTraceID())
	}
	sp.SetSpanID(newSpanID())
	at := v.Timestamp
	if at.IsZero() {
		at = now
	}
	ts := pcommon.NewTimestampFromTime(at)
	sp.SetStartTimestamp(ts)
	sp.SetEndTimestamp(ts)
	if isErrorSeverity(v.Severity) {
		sp.Status().SetCode(ptrace.StatusCodeError)
		sp.Status().SetMessage(v.Message)
	}

	attrs := sp.Attributes()
	attrs.EnsureCapacity(8 + len(v.Attributes))
	attrs.PutBool(attrViolation, true)
	attrs.PutStr(attrRuleID, v.RuleID)
	attrs.PutStr(attrRuleName, v.RuleName)
	attrs.PutStr(attrSeverity, v.Severity)
	attrs.PutStr(attrMessage, v.Message)
	attrs.PutStr(attrID, v.ID)
	attrs.PutStr(attrTraceID, v.TraceID)
	attrs.PutStr(attrTrigger, v.Trigger)
	// Sorted, so that the same violation always encodes the same way.
	for _, k := range slices.Sorted(maps.Keys(v.Attributes)) {
		attrs.PutStr(attrPrefix+k, v.Attributes[k])
	}
}

// isErrorSeverity reports whether a violation's span gets status Error.
func isErrorSeverity(s string) bool {
	return strings.EqualFold(s, "CRITICAL") || strings.EqualFold(s, "HIGH")
}

func parseTraceID(s string) (pcommon.TraceID, bool) {
	var id pcommon.TraceID
	if len(s) != 2*len(id) {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, false
	}
	return id, !id.IsEmpty()
}

func parseSpanID(s string) (pcommon.SpanID, bool) {
	var id pcommon.SpanID
	if len(s) != 2*len(id) {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, false
	}
	return id, !id.IsEmpty()
}

// newSpanID returns a random, non-zero span ID. Span IDs need to be unique,
// not secret, so math/rand (ChaCha8, seeded by the runtime) is enough.
func newSpanID() pcommon.SpanID {
	var id pcommon.SpanID
	for id.IsEmpty() {
		u := rand.Uint64()
		for i := range id {
			id[i] = byte(u >> (8 * i))
		}
	}
	return id
}

func newTraceID() pcommon.TraceID {
	var id pcommon.TraceID
	hi, lo := newSpanID(), newSpanID()
	copy(id[:8], hi[:])
	copy(id[8:], lo[:])
	return id
}

// maxResponseBytes bounds how much of a response is read.
const maxResponseBytes = 64 << 10

// maxRetryAfter caps a Retry-After header so that a huge value cannot
// overflow; any wait this long exceeds every sensible MaxRetryTime anyway.
const maxRetryAfter = 24 * time.Hour

// attemptError is why one request failed, and whether repeating it can help.
type attemptError struct {
	err        error
	permanent  bool
	retryAfter time.Duration // from Retry-After; 0 if none
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// post sends one encoded request. It returns how many spans the collector
// rejected in a partial success, or an *attemptError.
func (e *Exporter) post(ctx context.Context, body []byte) (rejected int64, _ error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return 0, &attemptError{err: err, permanent: true}
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "betrace")
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, &attemptError{err: err}
	}
	defer resp.Body.Close()
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	// Drain a little more so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))

	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		if readErr != nil {
			// The status says the spans were accepted; only the details
			// of a possible partial success are lost.
			return 0, nil
		}
		return partialRejects(resp.Header.Get("Content-Type"), data)
	case code == http.StatusTooManyRequests, code == http.StatusBadGateway,
		code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		return 0, &attemptError{
			err:        statusError(resp, data),
			retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), e.now()),
		}
	default:
		return 0, &attemptError{err: statusError(resp, data), permanent: true}
	}
}

// partialRejects reads an ExportTraceServiceResponse and returns how many
// spans it says were rejected, with the collector's reason.
func partialRejects(contentType string, data []byte) (int64, error) {
	if len(data) == 0 {
		return 0, nil
	}
	resp := ptraceotlp.NewExportResponse()
	var err error
	switch mediaType(contentType) {
	case "application/x-protobuf", "application/protobuf":
		err = resp.UnmarshalProto(data)
	case "application/json":
		err = resp.UnmarshalJSON(data)
	default:
		return 0, nil
	}
	if err != nil {
		return 0, nil // accepted per the status; the body is not ours to judge
	}
	ps := resp.PartialSuccess()
	if ps.RejectedSpans() <= 0 {
		return 0, nil
	}
	msg := ps.ErrorMessage()
	if msg == "" {
		msg = "no reason given"
	}
	return ps.RejectedSpans(), &attemptError{
		err:       fmt.Errorf("collector rejected %d spans: %s", ps.RejectedSpans(), clip(msg)),
		permanent: true,
	}
}

// statusError describes a failed response, with the collector's message if
// its body carries one (a google.rpc.Status, as OTLP/HTTP specifies).
func statusError(resp *http.Response, data []byte) error {
	var msg string
	switch mediaType(resp.Header.Get("Content-Type")) {
	case "application/x-protobuf", "application/protobuf":
		var st statuspb.Status
		if proto.Unmarshal(data, &st) == nil {
			msg = st.GetMessage()
		}
	case "application/json":
		var st struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &st) == nil {
			msg = st.Message
		}
	case "text/plain":
		msg = string(data)
	}
	if msg = strings.TrimSpace(msg); msg == "" {
		return fmt.Errorf("collector answered %s", resp.Status)
	}
	return fmt.Errorf("collector answered %s: %s", resp.Status, clip(msg))
}

func mediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return mt
}

// clip shortens a message from the network before it goes into a log line.
func clip(s string) string {
	const max = 256
	s = strings.ToValidUTF8(s, "?")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when there is no usable value.
func parseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// errPermanent reports whether err says a request must not be repeated.
func errPermanent(err error) bool {
	var ae *attemptError
	return errors.As(err, &ae) && ae.permanent
}
