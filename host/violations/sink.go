package violations

import (
	"context"
	"time"
)

// Sink takes the violations one completed trace produced, on their way to
// the stores and exporters. It is the seam between evaluation, which finds
// violations, and the recorder, which keeps them; it lives here, below
// both, so neither imports the other and service wires them.
//
// A Sink must return without waiting on storage: evaluation never waits
// on the disk. completed is when the trace completed (it measures how long
// a violation takes to be stored). vs belongs to the caller again once the
// call returns, so a Sink that keeps them copies them. A non-nil error
// means the Sink did not keep vs; it has already counted and, where an
// operator must act, logged that, so the caller need not log it again.
type Sink func(ctx context.Context, completed time.Time, vs []Violation) error
