package ingest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

// legacyResponse is the answer of POST /v1/spans, as earlier servers gave it.
type legacyResponse struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Errors   []string `json:"errors"`
}

// maxLegacyErrors bounds the errors listed in one answer.
const maxLegacyErrors = 20

func (r *Receiver) serveSpans(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	fail := func(f failure) {
		r.writeError(w, encodingJSON, f)
		r.observe(transportLegacy, f.outcome, start)
	}
	r.bodyDeadline(w, start)
	if f, ok := r.precheck(req); !ok {
		fail(f)
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
	spans, rejected, err := DecodeLegacy(b.b, r.cfg.MaxSpanAttributes)
	if err != nil {
		fail(classify(err))
		return
	}
	res, err := r.deliver(req.Context(), spans, rejected)
	if err != nil {
		fail(classify(err))
		return
	}
	out := legacyResponse{Accepted: res.accepted, Rejected: len(res.rejected), Errors: []string{}}
	for i, rj := range res.rejected {
		if i == maxLegacyErrors {
			out.Errors = append(out.Errors, fmt.Sprintf("and %d more", len(res.rejected)-maxLegacyErrors))
			break
		}
		out.Errors = append(out.Errors, fmt.Sprintf("spans[%d]: %v", rj.Index, rj.Err))
	}
	writeJSON(w, http.StatusOK, out)
	r.observe(transportLegacy, res.outcome(), start)
}

// legacySpan is one span of the legacy format. Both snake_case and camelCase
// names are accepted; when both are present, snake_case wins.
type legacySpan struct {
	TraceID           string                     `json:"trace_id"`
	TraceIDCamel      string                     `json:"traceId"`
	SpanID            string                     `json:"span_id"`
	SpanIDCamel       string                     `json:"spanId"`
	ParentSpanID      string                     `json:"parent_span_id"`
	ParentSpanIDCamel string                     `json:"parentSpanId"`
	Name              string                     `json:"name"`
	StartTime         *jsonInt                   `json:"start_time"`
	StartTimeCamel    *jsonInt                   `json:"startTime"`
	EndTime           *jsonInt                   `json:"end_time"`
	EndTimeCamel      *jsonInt                   `json:"endTime"`
	DurationMS        *jsonNumber                `json:"duration_ms"`
	DurationMSCamel   *jsonNumber                `json:"durationMs"`
	Attributes        map[string]json.RawMessage `json:"attributes"`
	Status            string                     `json:"status"`
	ServiceName       string                     `json:"service_name"`
	ServiceNameCamel  string                     `json:"serviceName"`
}

// jsonInt is an int64 sent as a JSON number or a decimal string, as
// protobuf's JSON mapping sends int64.
type jsonInt int64

func (v *jsonInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not an integer", clip(string(b)))
	}
	*v = jsonInt(n)
	return nil
}

// jsonNumber is a number sent as a JSON number or a decimal string.
type jsonNumber float64

func (v *jsonNumber) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%s is not a number", clip(string(b)))
	}
	*v = jsonNumber(f)
	return nil
}

func pick(snake, camel string) string {
	if snake != "" {
		return snake
	}
	return camel
}

func pickInt(snake, camel *jsonInt) int64 {
	switch {
	case snake != nil:
		return int64(*snake)
	case camel != nil:
		return int64(*camel)
	}
	return 0
}

// DecodeLegacy decodes a legacy POST /v1/spans body:
//
//	{"spans":[{"trace_id","span_id","parent_span_id","name","start_time",
//	  "end_time","duration_ms","attributes":{…},"status","service_name"}]}
//
// A body that is not such an object is malformed as a whole (ErrMalformed).
// Each span is then checked on its own and refused alone: IDs must be 32 and
// 16 hex digits, the name non-empty, times integers (as numbers or strings).
// Attribute values may be strings, numbers or booleans.
func DecodeLegacy(body []byte, maxAttrs int) ([]traces.Span, []Rejected, error) {
	var req struct {
		Spans []json.RawMessage `json:"spans"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, fmt.Errorf("%w: decode /v1/spans request: %v", ErrMalformed, err)
	}
	spans := make([]traces.Span, 0, len(req.Spans))
	var rejected []Rejected
	resources := map[string][]traces.Attr{}
	for i, raw := range req.Spans {
		s, err := legacyToSpan(raw, maxAttrs, resources)
		if err != nil {
			rejected = append(rejected, Rejected{Index: i, Err: err})
			continue
		}
		spans = append(spans, s)
	}
	return spans, rejected, nil
}

func legacyToSpan(raw json.RawMessage, maxAttrs int, resources map[string][]traces.Attr) (traces.Span, error) {
	var ls legacySpan
	if err := json.Unmarshal(raw, &ls); err != nil {
		return traces.Span{}, fmt.Errorf("%w: %v", ErrMalformedSpan, err)
	}
	var s traces.Span
	if err := hexID(s.TraceID[:], pick(ls.TraceID, ls.TraceIDCamel), "trace_id", ErrEmptyTraceID, ErrBadTraceID); err != nil {
		return s, err
	}
	if err := hexID(s.SpanID[:], pick(ls.SpanID, ls.SpanIDCamel), "span_id", ErrEmptySpanID, ErrBadSpanID); err != nil {
		return s, err
	}
	if p := pick(ls.ParentSpanID, ls.ParentSpanIDCamel); p != "" {
		if err := hexID(s.ParentSpanID[:], p, "parent_span_id", nil, ErrBadParentSpanID); err != nil {
			return s, err
		}
	}
	if ls.Name == "" {
		return s, fmt.Errorf("%w: name is required", ErrEmptyName)
	}
	if len(ls.Attributes) > maxAttrs {
		return s, fmt.Errorf("%w: %d, at most %d", ErrTooManyAttributes, len(ls.Attributes), maxAttrs)
	}
	s.Name = ls.Name
	startNS := pickInt(ls.StartTime, ls.StartTimeCamel)
	endNS := pickInt(ls.EndTime, ls.EndTimeCamel)
	if startNS < 0 || endNS < 0 {
		return s, fmt.Errorf("%w: start_time and end_time must not be negative", ErrMalformedSpan)
	}
	dur := ls.DurationMS
	if dur == nil {
		dur = ls.DurationMSCamel
	}
	if endNS == 0 && dur != nil && *dur > 0 {
		endNS = startNS + int64(float64(*dur)*1e6)
	}
	s.StartUnixNano, s.EndUnixNano = uint64(startNS), uint64(endNS)
	s.StatusCode, s.StatusMessage = legacyStatus(ls.Status)
	if len(ls.Attributes) > 0 {
		s.Attrs = make([]traces.Attr, 0, len(ls.Attributes))
		for _, k := range slices.Sorted(maps.Keys(ls.Attributes)) {
			a, err := legacyAttr(k, ls.Attributes[k])
			if err != nil {
				return s, err
			}
			s.Attrs = append(s.Attrs, a)
		}
	}
	if svc := pick(ls.ServiceName, ls.ServiceNameCamel); svc != "" {
		s.Service = svc
		res, ok := resources[svc]
		if !ok {
			res = []traces.Attr{{Key: "service.name", Type: abiv1.ValueString, Str: svc}}
			resources[svc] = res
		}
		s.ResourceAttrs = res
	}
	return s, nil
}

// hexID decodes an ID of len(dst) bytes from hex. An empty or all-zero ID
// is errEmpty (or allowed when errEmpty is nil).
func hexID(dst []byte, s, field string, errEmpty, errBad error) error {
	if s == "" {
		if errEmpty == nil {
			return nil
		}
		return fmt.Errorf("%w: %s is required", errEmpty, field)
	}
	if len(s) != 2*len(dst) {
		return fmt.Errorf("%w: %s %q has %d characters, want %d hex digits", errBad, field, clip(s), len(s), 2*len(dst))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("%w: %s %q is not hexadecimal", errBad, field, clip(s))
	}
	if errEmpty != nil && isZero(dst) {
		return fmt.Errorf("%w: %s is all zeros", errEmpty, field)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// legacyStatus maps the free-text status of the legacy format: OK, ERROR or
// UNSET (any case, with or without the STATUS_CODE_ prefix). Any other text
// is kept as the status message of an unset status.
func legacyStatus(s string) (uint8, string) {
	switch strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "STATUS_CODE_") {
	case "", "UNSET":
		return abiv1.StatusUnset, ""
	case "OK":
		return abiv1.StatusOK, ""
	case "ERROR":
		return abiv1.StatusError, ""
	}
	return abiv1.StatusUnset, s
}

func legacyAttr(key string, raw json.RawMessage) (traces.Attr, error) {
	a := traces.Attr{Key: key}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return a, fmt.Errorf("%w: attribute %q: %v", ErrMalformedSpan, key, err)
		}
		a.Type, a.Str = abiv1.ValueString, s
	case string(raw) == "true" || string(raw) == "false":
		a.Type = abiv1.ValueBool
		if raw[0] == 't' {
			a.Num = 1
		}
	case string(raw) == "null":
		a.Type = abiv1.ValueEmpty
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			a.Type, a.Num = abiv1.ValueInt, uint64(n)
		} else if f, err := strconv.ParseFloat(string(raw), 64); err == nil {
			a.Type, a.Num = abiv1.ValueDouble, math.Float64bits(f)
		} else {
			return a, fmt.Errorf("%w: attribute %q: %s is not a number", ErrMalformedSpan, key, clip(string(raw)))
		}
	default:
		return a, fmt.Errorf("%w: attribute %q must be a string, number or boolean", ErrMalformedSpan, key)
	}
	return a, nil
}
