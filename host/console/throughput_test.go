package console

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestThroughput(t *testing.T) {
	reg := prometheus.NewRegistry()
	spans := prometheus.NewCounterVec(prometheus.CounterOpts{Name: spansMetric}, []string{"protocol"})
	reg.MustRegister(spans)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	tp := NewThroughput(reg, clk.now)

	tp.Sample() // the first sample only sets the base
	for i := range 400 {
		clk.t = clk.t.Add(10 * time.Second)
		spans.WithLabelValues("grpc").Add(float64(1000 * i)) // i*100 spans/s over 10 s
		spans.WithLabelValues("http").Add(10)                // and 1 span/s more
		tp.Sample()
	}
	c, err := New(Config{Throughput: tp}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/throughput", nil))
	var got struct {
		Interval float64 `json:"intervalSeconds"`
		Points   []point `json:"points"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Interval != 10 || len(got.Points) != 361 {
		t.Fatalf("interval %v, %d points: want 10 s and an hour of them (361)", got.Interval, len(got.Points))
	}
	last := got.Points[len(got.Points)-1]
	if last.Spans != 399*100+1 || !last.At.Equal(clk.t) {
		t.Fatalf("last point %+v, want %d spans/s at %v", last, 399*100+1, clk.t)
	}
	if age := clk.t.Sub(got.Points[0].At); age > time.Hour {
		t.Fatalf("oldest point is %v old", age)
	}
}
