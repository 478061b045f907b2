package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/betracehq/betrace/host/traces"
)

// BenchmarkDecode measures decoding plus conversion to traces.Span per span,
// for batches of 100 spans, next to pdata's decoding alone (pdata-only): the
// design's reference for pdata on 2 cores is ~1.3 µs per small span and
// ~3.5 µs per 10-attribute span.
func BenchmarkDecode(b *testing.B) {
	for _, attrs := range []int{0, 10} {
		td := makeTraces(100, attrs)
		pb, jb := protoBody(b, td), jsonBody(b, td)
		b.Run(fmt.Sprintf("pdata-only/%d-attrs", attrs), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(pb)))
			for b.Loop() {
				if err := ptraceotlp.NewExportRequest().UnmarshalProto(pb); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/span")
		})
		b.Run(fmt.Sprintf("proto/%d-attrs", attrs), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(pb)))
			for b.Loop() {
				spans, _, err := DecodeProto(pb)
				if err != nil || len(spans) != 100 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/span")
		})
		b.Run(fmt.Sprintf("json/%d-attrs", attrs), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(jb)))
			for b.Loop() {
				spans, _, err := DecodeJSON(jb)
				if err != nil || len(spans) != 100 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/span")
		})
	}
}

// BenchmarkTracesHandler is a whole OTLP/HTTP protobuf request without the
// network: read, decode, convert, into a sink that keeps nothing.
func BenchmarkTracesHandler(b *testing.B) {
	r, err := New(DefaultConfig(), func(context.Context, []traces.Span) error { return nil }, Settings{})
	if err != nil {
		b.Fatal(err)
	}
	h := r.TracesHandler()
	body := string(protoBody(b, makeTraces(100, 10)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/v1/traces", strings.NewReader(body))
			req.Header.Set("Content-Type", contentTypeProto)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code)
			}
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/span")
}
