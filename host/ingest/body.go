package ingest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
)

// Request bodies are read before a request takes a decoding slot, so a slow
// sender holds only its connection and the bytes it has sent. Three bounds
// keep that cheap:
//
//   - a body must keep up with Config.MinReadRate after Config.ReadGrace,
//     enforced with a read deadline that moves as bytes arrive;
//   - a body's buffer grows with what has arrived (doubling from
//     minBodyBuffer), never with what Content-Length promises;
//   - all buffers together stay within Config.MaxBufferedBytes; growth that
//     would pass it is refused at once with a retryable 429, so a full budget
//     sheds the largest readers instead of deadlocking them.
//
// With the defaults, 1,000 slow senders each promising 16 MiB hold 8 KiB
// each until their bytes arrive; to hold the whole 256 MiB budget they must
// send 256 MiB, and to keep holding it, keep sending at 64 KiB/s each.

var (
	errTooSlow = errors.New("request body arrived too slowly")
	errBusy    = errors.New("too many request bytes are being read at once")
)

// answerTimeout bounds the time from a fully read body to the end of its
// answer (waiting for a slot, decoding, the sink, writing): the server's
// write timeout runs from the request's headers and cannot know how long
// the body took. Default 60s, the service's WriteTimeout.
const answerTimeout = 60 * time.Second

// budget counts bytes against a fixed bound, taken without waiting.
type budget struct {
	max  int64
	used atomic.Int64
}

func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *budget) give(n int64) { b.used.Add(-n) }

// body is one request body in memory, its capacity counted in the
// receiver's budget until free.
type body struct {
	b []byte
}

// readBody reads the request body, decompressing gzip, with both the
// compressed and the decompressed size bounded by MaxRequestBytes, the
// arrival rate by MinReadRate and the memory by MaxBufferedBytes. The
// caller frees the body once it is done with it, also after a failure.
func (r *Receiver) readBody(w http.ResponseWriter, req *http.Request, start time.Time, b *body) (failure, bool) {
	limit := r.cfg.MaxRequestBytes
	tooLarge := failure{http.StatusRequestEntityTooLarge, codes.ResourceExhausted, outcomeTooLarge, false,
		fmt.Sprintf("request body is larger than %d bytes (MaxRequestBytes): send smaller batches", limit)}
	if req.ContentLength > limit {
		return tooLarge, false
	}
	rc := http.NewResponseController(w)
	rr := &rateReader{r: req.Body, rc: rc, start: start, grace: r.cfg.ReadGrace, rate: r.cfg.MinReadRate}
	var src io.Reader = http.MaxBytesReader(w, rr, limit)
	switch ce := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding"))); ce {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := r.pools.gzip(src)
		if err != nil {
			return r.readFailure(w, err, tooLarge), false
		}
		defer r.pools.putGzip(zr)
		src = zr
	default:
		return failure{http.StatusUnsupportedMediaType, codes.InvalidArgument, outcomeUnsupported, false,
			fmt.Sprintf("unsupported Content-Encoding %q: send gzip or no encoding", ce)}, false
	}
	if err := r.fill(b, src, limit); err != nil {
		if errors.Is(err, errTooLarge) {
			return tooLarge, false
		}
		return r.readFailure(w, err, tooLarge), false
	}
	// The body is in; from here the connection is idle until the answer,
	// and a deadline left from the rate would cut the server's background
	// read (and so the request's context) while the request waits for a
	// slot or the sink.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(answerTimeout))
	return failure{}, true
}

// readFailure answers an error met while reading a body.
func (r *Receiver) readFailure(w http.ResponseWriter, err error, tooLarge failure) failure {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge
	case errors.Is(err, errTooSlow):
		// The connection's read side is past its deadline: it cannot carry
		// another request.
		w.Header().Set("Connection", "close")
		return failure{http.StatusRequestTimeout, codes.DeadlineExceeded, outcomeTooSlow, false,
			fmt.Sprintf("%v: send at least %d bytes per second after the first %v (MinReadRate, ReadGrace), or smaller batches",
				err, r.cfg.MinReadRate, r.cfg.ReadGrace)}
	case errors.Is(err, errBusy):
		w.Header().Set("Connection", "close")
		return failure{http.StatusTooManyRequests, codes.ResourceExhausted, outcomeBusy, true,
			fmt.Sprintf("%v (MaxBufferedBytes %d): retry later", err, r.cfg.MaxBufferedBytes)}
	}
	return failure{http.StatusBadRequest, codes.InvalidArgument, outcomeMalformed, false, "read request body: " + err.Error()}
}

// fill reads src into b until EOF, growing b's buffer as bytes arrive and
// counting its capacity in the budget. More than limit bytes is errTooLarge.
func (r *Receiver) fill(b *body, src io.Reader, limit int64) error {
	for {
		if len(b.b) == cap(b.b) {
			if int64(len(b.b)) >= limit {
				var one [1]byte
				n, err := io.ReadFull(src, one[:])
				switch {
				case n > 0:
					return errTooLarge
				case err == io.EOF:
					return nil
				}
				return err
			}
			if err := r.grow(b, limit); err != nil {
				return err
			}
		}
		n, err := src.Read(b.b[len(b.b):cap(b.b)])
		b.b = b.b[:len(b.b)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// grow doubles b's buffer, up to limit, if the budget allows it.
func (r *Receiver) grow(b *body, limit int64) error {
	old := int64(cap(b.b))
	c := min(max(2*old, minBodyBuffer), limit)
	if !r.buffered.take(c - old) {
		return errBusy
	}
	nb := append(r.pools.bytes(int(c)), b.b...)
	r.pools.putBytes(b.b)
	b.b = nb
	return nil
}

// free returns b's buffer and its share of the budget.
func (r *Receiver) free(b *body) {
	r.buffered.give(int64(cap(b.b)))
	r.pools.putBytes(b.b)
	b.b = nil
}

// rateReader reads a request body under a read deadline that moves with the
// bytes read: the n-th byte must arrive by start + grace + n/rate.
type rateReader struct {
	r        io.ReadCloser
	rc       *http.ResponseController
	start    time.Time
	grace    time.Duration
	rate     int64
	n        int64
	deadline time.Time
}

func (rr *rateReader) Close() error { return rr.r.Close() }

func (rr *rateReader) Read(p []byte) (int, error) {
	d := rr.start.Add(rr.grace + time.Duration(rr.n*int64(time.Second)/rr.rate))
	if !d.Equal(rr.deadline) {
		// Not every ResponseWriter supports deadlines (httptest's recorder
		// does not); the server's own ReadTimeout still applies then.
		_ = rr.rc.SetReadDeadline(d)
		rr.deadline = d
	}
	n, err := rr.r.Read(p)
	rr.n += int64(n)
	if err != nil && err != io.EOF && (errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(d)) {
		return n, fmt.Errorf("%w: %d bytes in %v", errTooSlow, rr.n, time.Since(rr.start).Round(time.Millisecond))
	}
	return n, err
}

// Body buffers come in power-of-two classes from minBodyBuffer to
// maxPooled; larger ones are left to the garbage collector so one huge
// request does not pin memory.
const (
	minBodyBuffer = 8 << 10
	maxPooled     = 1 << 20
	bufClasses    = 8 // 8 KiB … 1 MiB
)

// pools recycles body buffers and gzip readers.
type pools struct {
	bufs  [bufClasses]sync.Pool // of *[]byte, class i holding minBodyBuffer<<i
	gzips sync.Pool
	spans sync.Pool // of *[]traces.Span: converted requests (the sink copies them)
}

// class returns the pool class of a capacity, or -1.
func class(c int) int {
	for i := range bufClasses {
		if c == minBodyBuffer<<i {
			return i
		}
	}
	return -1
}

// bytes returns an empty buffer of capacity c.
func (p *pools) bytes(c int) []byte {
	if i := class(c); i >= 0 {
		if b, ok := p.bufs[i].Get().(*[]byte); ok {
			return (*b)[:0]
		}
	}
	return make([]byte, 0, c)
}

func (p *pools) putBytes(b []byte) {
	if i := class(cap(b)); i >= 0 {
		b = b[:0]
		p.bufs[i].Put(&b)
	}
}
