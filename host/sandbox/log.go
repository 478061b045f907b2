package sandbox

import (
	"strings"
	"sync"
)

// Log keeps the most recent bytes a rule wrote to stderr, bounded so that a
// chatty or hostile guest cannot grow the host.
type Log struct {
	mu  sync.Mutex
	buf []byte // ring; len == cap once full
	pos int    // next write position once full
	max int
}

func newLog(max int) *Log { return &Log{max: max} }

// Write keeps the tail of p; it never fails.
func (l *Log) Write(p []byte) (int, error) {
	n := len(p)
	if l.max == 0 {
		return n, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(p) > l.max {
		p = p[len(p)-l.max:]
	}
	for len(p) > 0 {
		if len(l.buf) < l.max {
			k := min(l.max-len(l.buf), len(p))
			l.buf = append(l.buf, p[:k]...)
			p = p[k:]
			continue
		}
		k := copy(l.buf[l.pos:], p)
		l.pos = (l.pos + k) % l.max
		p = p[k:]
	}
	return n, nil
}

// Bytes returns a copy of the log, oldest byte first.
func (l *Log) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]byte, 0, len(l.buf))
	out = append(out, l.buf[l.pos:]...)
	return append(out, l.buf[:l.pos]...)
}

// tail records what one instance wrote during its current call, so a fault
// can quote the guest's last words (a Go panic message, for instance). It
// also forwards everything to the rule's Log.
type tail struct {
	log *Log
	buf []byte
}

const tailBytes = 4096

func (t *tail) Write(p []byte) (int, error) {
	t.log.Write(p)
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	return len(p), nil
}

// summary returns the line that best explains a failure: a Go panic or
// fatal error if there is one, else the last line written during the call.
func (t *tail) summary() string {
	text := string(t.buf)
	for _, marker := range []string{"panic: ", "fatal error: ", "runtime: "} {
		if i := strings.Index(text, marker); i >= 0 {
			line, _, _ := strings.Cut(text[i:], "\n")
			return line
		}
	}
	text = strings.TrimRight(text, "\n ")
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		return text[i+1:]
	}
	return text
}
