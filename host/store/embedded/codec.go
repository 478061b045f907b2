package embedded

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

// Violation keys are the timestamp (Unix nanoseconds, sign bit flipped so
// that big-endian byte order is time order) followed by the violation ID:
// bbolt keeps keys sorted, so newest first is a reverse cursor walk, and
// storing the same violation twice (a retried append) is one row.
//
// Violation values are a small header, so that Open can rebuild the index
// without decoding JSON, followed by the violation as JSON:
//
//	byte    valueFormat
//	uvarint len, bytes   severity
//	uvarint len, bytes   rule ID
//	uvarint len, bytes   trace ID
//	bytes                the violation as JSON

const (
	valueFormat  = 1
	cursorFormat = 1
)

// ErrBadCursor is wrapped by QueryViolations when Query.Cursor was not
// made by this store.
var ErrBadCursor = fmt.Errorf("bad cursor: %w", store.ErrBadCursor)

func encodeTS(ts int64) uint64 { return uint64(ts) ^ 1<<63 }
func decodeTS(u uint64) int64  { return int64(u ^ 1<<63) }

func makeKey(ts int64, id []byte) []byte {
	k := make([]byte, 8+len(id))
	binary.BigEndian.PutUint64(k, encodeTS(ts))
	copy(k[8:], id)
	return k
}

func splitKey(k []byte) (ts int64, id []byte, ok bool) {
	if len(k) < 9 {
		return 0, nil, false
	}
	return decodeTS(binary.BigEndian.Uint64(k)), k[8:], true
}

// pending is a validated, encoded violation on its way to disk.
type pending struct {
	key, val                  []byte
	ts                        int64
	severity, ruleID, traceID string
}

func encodeViolation(v *violations.Violation) (pending, error) {
	if err := v.CheckStorable(); err != nil {
		return pending{}, err
	}
	body, err := json.Marshal(v)
	if err != nil {
		return pending{}, err
	}
	ts := v.Timestamp.UnixNano()
	val := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(v.Severity)+len(v.RuleID)+len(v.TraceID)+len(body))
	val = append(val, valueFormat)
	for _, s := range []string{v.Severity, v.RuleID, v.TraceID} {
		val = binary.AppendUvarint(val, uint64(len(s)))
		val = append(val, s...)
	}
	val = append(val, body...)
	return pending{
		key: makeKey(ts, []byte(v.ID)), val: val, ts: ts,
		severity: v.Severity, ruleID: v.RuleID, traceID: v.TraceID,
	}, nil
}

// header is what the index needs from a stored value, without its JSON.
// The strings alias the value's bytes.
type header struct {
	severity, ruleID, traceID []byte
	body                      []byte
}

func decodeHeader(val []byte) (header, error) {
	var h header
	if len(val) == 0 || val[0] != valueFormat {
		return h, errors.New("unknown value format")
	}
	rest := val[1:]
	for _, dst := range []*[]byte{&h.severity, &h.ruleID, &h.traceID} {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			return h, errors.New("truncated header")
		}
		*dst = rest[w : w+int(n)]
		rest = rest[w+int(n):]
	}
	h.body = rest
	return h, nil
}

func decodeViolation(val []byte) (violations.Violation, error) {
	var v violations.Violation
	h, err := decodeHeader(val)
	if err != nil {
		return v, err
	}
	err = json.Unmarshal(h.body, &v)
	return v, err
}

func encodeCursor(ts int64, id []byte) string {
	b := make([]byte, 0, 9+len(id))
	b = append(b, cursorFormat)
	b = binary.BigEndian.AppendUint64(b, encodeTS(ts))
	b = append(b, id...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (ts int64, id []byte, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: not unpadded base64url", ErrBadCursor)
	}
	if len(b) < 10 {
		return 0, nil, fmt.Errorf("%w: %d bytes is too short", ErrBadCursor, len(b))
	}
	if b[0] != cursorFormat {
		return 0, nil, fmt.Errorf("%w: unknown format %d", ErrBadCursor, b[0])
	}
	if len(b)-9 > violations.MaxIDBytes {
		return 0, nil, fmt.Errorf("%w: %d bytes is too long", ErrBadCursor, len(b))
	}
	ts, id, _ = splitKey(b[1:])
	return ts, id, nil
}
