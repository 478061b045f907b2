package traces

// Span is the compact form of one OpenTelemetry span: what ingest produces
// after decoding OTLP once, what the assembler buffers and what the ABI
// encoder lays out for rules. It holds no pdata and no pointers into request
// buffers, so a span outlives the request that carried it.
type Span struct {
	TraceID       [16]byte
	SpanID        [8]byte
	ParentSpanID  [8]byte // all zero for a root span
	Name          string
	Service       string // resource attribute service.name
	Kind          uint8  // abiv1.Kind*
	StatusCode    uint8  // abiv1.Status*
	StatusMessage string
	StartUnixNano uint64
	EndUnixNano   uint64
	Attrs         []Attr
	// ResourceAttrs is shared, read-only, by every span of one resource.
	ResourceAttrs []Attr
}

// Attr is one attribute. Type is an abiv1.Value* code: Str holds the value of
// string, bytes, array and map attributes (arrays and maps as JSON text); Num
// holds bool (0 or 1), int (two's complement) and double (IEEE 754 bits).
type Attr struct {
	Key  string
	Type uint8
	Str  string
	Num  uint64
}

// IsRoot reports whether the span has no parent.
func (s *Span) IsRoot() bool { return s.ParentSpanID == [8]byte{} }
