package ingest

import (
	"testing"

	"github.com/betracehq/betrace/host/traces"
)

// The fuzz targets feed arbitrary bytes to each decoder entry point. None may
// panic, and whatever they accept must be a valid span.

func checkSpans(t *testing.T, spans []traces.Span, rejected []Rejected) {
	t.Helper()
	for _, s := range spans {
		if s.TraceID == [16]byte{} || s.SpanID == [8]byte{} || s.Name == "" {
			t.Fatalf("accepted an invalid span: %+v", s)
		}
	}
	for _, r := range rejected {
		if r.Reason() == "other" {
			t.Fatalf("rejection without a reason label: %v", r.Err)
		}
	}
}

func FuzzOTLPProto(f *testing.F) {
	f.Add(protoBody(f, makeTraces(3, 4)))
	f.Add(badIDProto())
	f.Add([]byte{})
	f.Add([]byte("\x0a\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, body []byte) {
		spans, rejected, err := DecodeProto(body)
		if err != nil {
			return
		}
		checkSpans(t, spans, rejected)
	})
}

func FuzzOTLPJSON(f *testing.F) {
	f.Add(jsonBody(f, makeTraces(3, 4)))
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102","spanId":"0102030405060708","name":"a"}]}]}]}`))
	f.Add([]byte(`{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"0102030405060708090a0b0c0d0e0f10","links":[{"traceId":"zz"}]}]}]}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		spans, rejected, err := DecodeJSON(body)
		if err != nil {
			return
		}
		checkSpans(t, spans, rejected)
	})
}

func FuzzLegacy(f *testing.F) {
	f.Add([]byte(`{"spans":[{"trace_id":"` + tid + `","span_id":"` + sid + `","parent_span_id":"` + pid + `","name":"x","start_time":"1","end_time":2,"duration_ms":1.5,"attributes":{"a":"b","n":1,"f":true},"status":"ERROR","service_name":"s"}]}`))
	f.Add([]byte(`{"spans":[{"traceId":"abc","spanId":"` + sid + `","name":"x","attributes":{"a":[1]}}]}`))
	f.Add([]byte(`{"spans":[1,"x",null,{}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		spans, rejected, err := DecodeLegacy(body, 8)
		if err != nil {
			return
		}
		checkSpans(t, spans, rejected)
		for _, s := range spans {
			if len(s.Attrs) > 8 {
				t.Fatalf("accepted %d attributes", len(s.Attrs))
			}
		}
	})
}
