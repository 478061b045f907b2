package ingest

import (
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/betracehq/betrace/host/traces"
)

// DecodeJSON decodes an OTLP/JSON ExportTraceServiceRequest and converts it.
func DecodeJSON(body []byte) ([]traces.Span, []Rejected, error) {
	var u ptrace.JSONUnmarshaler
	td, err := u.UnmarshalTraces(body)
	if err != nil {
		return nil, nil, fmt.Errorf("decode OTLP/JSON traces: %w", err)
	}
	spans, rejected := Convert(nil, td)
	return spans, rejected, nil
}
