package traces

// Completion says what completed a trace.
type Completion uint8

// Completion reasons. String gives the word used in metrics and the API.
const (
	CompletionUnknown  Completion = iota // zero value; never produced by the assembler
	CompletionRoot                       // the root span arrived and Settle passed
	CompletionIdle                       // no new span for IdleTimeout
	CompletionMaxAge                     // MaxAge passed since the first span
	CompletionSpanCap                    // a span beyond MaxSpans arrived
	CompletionShutdown                   // flushed by Shutdown
)

// completions lists the reasons the assembler produces, for metric labels.
var completions = [...]Completion{CompletionRoot, CompletionIdle, CompletionMaxAge, CompletionSpanCap, CompletionShutdown}

// String returns root, idle, max_age, span_cap, shutdown or unknown.
func (c Completion) String() string {
	switch c {
	case CompletionRoot:
		return "root"
	case CompletionIdle:
		return "idle"
	case CompletionMaxAge:
		return "max_age"
	case CompletionSpanCap:
		return "span_cap"
	case CompletionShutdown:
		return "shutdown"
	}
	return "unknown"
}
