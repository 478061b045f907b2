package ingest

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/betracehq/betrace/host/traces"
)

// ErrMalformed means a whole request could not be decoded. It is permanent:
// OTLP answers 400 / INVALID_ARGUMENT and senders must not retry.
var ErrMalformed = errors.New("malformed request")

// defaultMaxAttrs is DefaultConfig's MaxSpanAttributes and
// MaxResourceAttributes, for DecodeJSON and DecodeProto.
const defaultMaxAttrs = 128

// DecodeJSON decodes an OTLP/JSON ExportTraceServiceRequest and converts it
// with the default attribute limits.
func DecodeJSON(body []byte) ([]traces.Span, []Rejected, error) {
	td, err := decodeOTLP(body, encodingJSON)
	if err != nil {
		return nil, nil, err
	}
	spans, rejected := Convert(nil, td, defaultLimits)
	return spans, rejected, nil
}

// DecodeProto decodes an OTLP/protobuf ExportTraceServiceRequest and converts
// it with the default attribute limits.
func DecodeProto(body []byte) ([]traces.Span, []Rejected, error) {
	td, err := decodeOTLP(body, encodingProto)
	if err != nil {
		return nil, nil, err
	}
	spans, rejected := Convert(nil, td, defaultLimits)
	return spans, rejected, nil
}

type encoding uint8

const (
	encodingJSON encoding = iota
	encodingProto
)

func (e encoding) String() string {
	if e == encodingProto {
		return "OTLP/protobuf"
	}
	return "OTLP/JSON"
}

// decodeOTLP decodes an ExportTraceServiceRequest. pdata refuses a whole
// request when one trace or span ID has the wrong length; the error then
// names the offending field (resourceSpans[0].scopeSpans[0].spans[3].traceId)
// so that the sender can find it.
func decodeOTLP(body []byte, enc encoding) (ptrace.Traces, error) {
	req := ptraceotlp.NewExportRequest()
	var err error
	if enc == encodingProto {
		err = req.UnmarshalProto(body)
	} else {
		err = req.UnmarshalJSON(body)
	}
	if err != nil {
		return ptrace.Traces{}, malformed(body, enc, err)
	}
	return req.Traces(), nil
}

func malformed(body []byte, enc encoding, err error) error {
	var field error
	if enc == encodingProto {
		field = diagnoseProto(body)
	} else {
		field = diagnoseJSON(body)
	}
	if field != nil {
		return fmt.Errorf("%w: decode %s request: %v", ErrMalformed, enc, field)
	}
	return fmt.Errorf("%w: decode %s request: %v", ErrMalformed, enc, err)
}

// idField is an ID field of a span or link: its names in the two encodings
// and the length of the ID in bytes.
type idField struct {
	proto       protowire.Number
	json, snake string
	size        int
}

var (
	spanIDFields = []idField{{1, "traceId", "trace_id", 16}, {2, "spanId", "span_id", 8}, {4, "parentSpanId", "parent_span_id", 8}}
	linkIDFields = []idField{{1, "traceId", "trace_id", 16}, {2, "spanId", "span_id", 8}}
)

// diagnoseJSON finds the first trace or span ID in an OTLP/JSON request that
// is not empty and not exactly 2×size hex digits. It returns nil when it
// finds none (the body is then malformed in some other way).
func diagnoseJSON(body []byte) error {
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	rss, rssKey := member(req, "resourceSpans", "resource_spans")
	for i, rs := range elements(rss) {
		obj := object(rs)
		for _, names := range [][2]string{{"scopeSpans", "scope_spans"}, {"instrumentationLibrarySpans", "instrumentation_library_spans"}} {
			sss, ssKey := member(obj, names[0], names[1])
			for j, ss := range elements(sss) {
				for k, sp := range elements(member1(object(ss), "spans")) {
					path := fmt.Sprintf("%s[%d].%s[%d].spans[%d]", rssKey, i, ssKey, j, k)
					span := object(sp)
					if err := checkJSONIDs(path, span, spanIDFields); err != nil {
						return err
					}
					for l, ln := range elements(member1(span, "links")) {
						if err := checkJSONIDs(fmt.Sprintf("%s.links[%d]", path, l), object(ln), linkIDFields); err != nil {
							return err
						}
					}
				}
			}
		}
	}
	return nil
}

func checkJSONIDs(path string, obj map[string]json.RawMessage, fields []idField) error {
	for _, f := range fields {
		raw, key := member(obj, f.json, f.snake)
		var s string
		if raw == nil || json.Unmarshal(raw, &s) != nil || s == "" {
			continue
		}
		if len(s) != 2*f.size {
			return fmt.Errorf("%s.%s: %q has %d characters, want %d hex digits", path, key, clip(s), len(s), 2*f.size)
		}
		if _, err := hex.DecodeString(s); err != nil {
			return fmt.Errorf("%s.%s: %q is not hexadecimal", path, key, clip(s))
		}
	}
	return nil
}

func member(obj map[string]json.RawMessage, camel, snake string) (json.RawMessage, string) {
	if v, ok := obj[camel]; ok {
		return v, camel
	}
	if v, ok := obj[snake]; ok {
		return v, snake
	}
	return nil, camel
}

func member1(obj map[string]json.RawMessage, key string) json.RawMessage { return obj[key] }

func elements(raw json.RawMessage) []json.RawMessage {
	var a []json.RawMessage
	if raw != nil {
		_ = json.Unmarshal(raw, &a)
	}
	return a
}

func object(raw json.RawMessage) map[string]json.RawMessage {
	var o map[string]json.RawMessage
	_ = json.Unmarshal(raw, &o)
	return o
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// diagnoseProto is diagnoseJSON for the protobuf encoding: it walks the wire
// format (ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.
// scope_spans = 2 or the deprecated instrumentation_library_spans = 1000,
// ScopeSpans.spans = 2, Span.links = 13) and checks the ID lengths.
func diagnoseProto(body []byte) error {
	i := 0
	var found error
	eachBytes(body, 1, func(rs []byte) bool {
		j := 0
		visit := func(ss []byte) bool {
			k := 0
			eachBytes(ss, 2, func(sp []byte) bool {
				path := fmt.Sprintf("resource_spans[%d].scope_spans[%d].spans[%d]", i, j, k)
				if found = checkProtoIDs(path, sp, spanIDFields); found != nil {
					return false
				}
				l := 0
				eachBytes(sp, 13, func(ln []byte) bool {
					found = checkProtoIDs(fmt.Sprintf("%s.links[%d]", path, l), ln, linkIDFields)
					l++
					return found == nil
				})
				k++
				return found == nil
			})
			j++
			return found == nil
		}
		eachBytes(rs, 2, visit)
		if found == nil {
			eachBytes(rs, 1000, visit)
		}
		i++
		return found == nil
	})
	return found
}

func checkProtoIDs(path string, msg []byte, fields []idField) error {
	for _, f := range fields {
		var err error
		eachBytes(msg, f.proto, func(v []byte) bool {
			if len(v) != 0 && len(v) != f.size {
				err = fmt.Errorf("%s.%s: %d bytes, want %d", path, f.snake, len(v), f.size)
				return false
			}
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// eachBytes calls fn with the value of every length-delimited field num of
// msg, in order, until fn returns false. It stops quietly at malformed input.
func eachBytes(msg []byte, num protowire.Number, fn func([]byte) bool) {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return
		}
		msg = msg[l:]
		if typ == protowire.BytesType && n == num {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 || !fn(v) {
				return
			}
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return
		}
		msg = msg[l:]
	}
}
