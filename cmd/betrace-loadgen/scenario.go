package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Scenarios compare two runs on fresh servers in one command, so the ratio
// they print holds for one machine at one moment, whatever its speed:
//
//   - neighbour: 19 DSL rules alone, then the same 19 beside heavy-legal (a
//     rule that never faults but spends about 19M fuel on every trace). The
//     19 should keep at least 90% of their throughput.
//   - storm: 20 DSL rules with 10% of traces violating, then with every
//     trace violating. Throughput should keep at least 80%, and the last
//     verdict should be stored within 5 s of the load ending in both.
//   - memory: 20 DSL rules at saturation: peak resident memory, and the
//     trace buffer's bytes per buffered span.
//   - ceiling: a decode-only OTLP/HTTP sink (sink.go), then BeTrace with 20
//     DSL rules, both over OTLP/HTTP protobuf: spans per second and CPU per
//     span of each, and their ratios.
func runScenario(o options) error {
	o.dsl = true
	switch o.scenario {
	case "neighbour":
		o.ruleCount = 19
		alone, err := runPhase(o)
		if err != nil {
			return err
		}
		o.heavy = true
		beside, err := runPhase(o)
		if err != nil {
			return err
		}
		heavy := `rule_id="heavy-legal"`
		evalRate := func(p phase) float64 {
			return (p.values["betrace_rule_evaluation_total"] - sumWhere(p.values, "betrace_rule_evaluation_total{", heavy)) / p.res.elapsed.Seconds()
		}
		return printJSON(map[string]any{
			"scenario":                            "neighbour",
			"alone_spans_per_second":              alone.res.spansPerSecond(),
			"beside_heavy_spans_per_second":       beside.res.spansPerSecond(),
			"spans_ratio":                         beside.res.spansPerSecond() / alone.res.spansPerSecond(),
			"alone_evaluations_of_19_per_second":  evalRate(alone),
			"beside_evaluations_of_19_per_second": evalRate(beside),
			"evaluations_of_19_ratio":             evalRate(beside) / evalRate(alone),
			"heavy_evaluations":                   sumWhere(beside.values, "betrace_rule_evaluation_total{", heavy),
			"heavy_skipped":                       sumWhere(beside.values, "betrace_rule_evaluations_skipped_total{", heavy),
			"last_verdict_after_load_alone_s":     alone.drain.Seconds(),
			"last_verdict_after_load_beside_s":    beside.drain.Seconds(),
		})
	case "storm":
		o.ruleCount = 20
		o.violating = 0.1
		some, err := runPhase(o)
		if err != nil {
			return err
		}
		o.violating = 1
		all, err := runPhase(o)
		if err != nil {
			return err
		}
		return printJSON(map[string]any{
			"scenario":                         "storm",
			"violating_10pct_spans_per_second": some.res.spansPerSecond(),
			"violating_all_spans_per_second":   all.res.spansPerSecond(),
			"throughput_ratio":                 all.res.spansPerSecond() / some.res.spansPerSecond(),
			"last_verdict_after_load_10pct_s":  some.drain.Seconds(),
			"last_verdict_after_load_all_s":    all.drain.Seconds(),
			"violations_found_all":             all.values["betrace_violations_total"],
			"violations_dropped_all":           all.values["betrace_violations_dropped_total"],
		})
	case "ceiling":
		o.protocol, o.ruleCount = "http", 20
		sink, err := spawnSink()
		if err != nil {
			return err
		}
		so := o
		so.httpTarget = sink.base
		before, err := cpuSeconds(sink.cmd.Process.Pid)
		if err != nil {
			sink.stop()
			return err
		}
		ceiling, err := drive(so)
		after, _ := cpuSeconds(sink.cmd.Process.Pid)
		sink.stop()
		if err != nil {
			return err
		}
		p, err := runPhase(o)
		if err != nil {
			return err
		}
		sinkCPU := (after - before) * 1e6 / float64(ceiling.spans)
		betraceCPU := p.cpuSeconds * 1e6 / float64(p.res.spans)
		return printJSON(map[string]any{
			"scenario":                     "ceiling",
			"sink_spans_per_second":        ceiling.spansPerSecond(),
			"betrace_spans_per_second":     p.res.spansPerSecond(),
			"throughput_of_ceiling":        p.res.spansPerSecond() / ceiling.spansPerSecond(),
			"sink_cpu_us_per_span":         sinkCPU,
			"betrace_cpu_us_per_span":      betraceCPU,
			"cpu_per_span_over_ceiling":    betraceCPU / sinkCPU,
			"betrace_last_verdict_after_s": p.drain.Seconds(),
		})
	case "memory":
		o.ruleCount = 20
		p, err := runPhase(o)
		if err != nil {
			return err
		}
		return printJSON(map[string]any{
			"scenario":                "memory",
			"spans_per_second":        p.res.spansPerSecond(),
			"peak_rss_mib":            p.res.peakRSS / (1 << 20),
			"bytes_per_buffered_span": p.res.peakBytesPerSpan,
		})
	}
	return fmt.Errorf("unknown scenario %q: use neighbour, storm, memory or ceiling", o.scenario)
}

// phase is one run of a scenario on its own fresh server.
type phase struct {
	res        result
	values     map[string]float64 // the server's metrics once it was quiet
	drain      time.Duration      // from the end of the load to the last verdict stored
	cpuSeconds float64            // the server's CPU from the start of the load to quiet
}

func runPhase(o options) (phase, error) {
	srv, err := spawnWithRules(o)
	if err != nil {
		return phase{}, err
	}
	defer srv.stop()
	o.httpTarget, o.grpcTarget = srv.http, srv.grpc
	start, _, err := scrape(srv.http)
	if err != nil {
		return phase{}, err
	}
	res, err := drive(o)
	if err != nil {
		return phase{}, err
	}
	drain, err := waitQuiet(srv.http, res.ended, 120*time.Second)
	if err != nil {
		return phase{}, err
	}
	values, _, err := scrape(srv.http)
	cpu := values["process_cpu_seconds_total"] - start["process_cpu_seconds_total"]
	return phase{res: res, values: values, drain: drain, cpuSeconds: cpu}, err
}

// waitQuiet polls the server until no trace is buffered, queued or being
// evaluated and no violation waits to be stored, and returns how long after
// ended that was.
func waitQuiet(base string, ended time.Time, limit time.Duration) (time.Duration, error) {
	last := -1.0
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		v, _, err := scrape(base)
		if err != nil {
			return 0, err
		}
		evaluated := v["betrace_rule_evaluation_total"] + v["betrace_rule_evaluations_skipped_total"]
		idle := v["betrace_traces_active"]+v["betrace_traces_queued"]+v["betrace_evaluation_queue_length"]+v["betrace_recorder_buffer_bytes"] == 0
		if idle && evaluated == last {
			return time.Since(ended), nil
		}
		last = evaluated
	}
	return 0, errors.New("the server was still evaluating or storing two minutes after the load ended")
}

// sumWhere sums the series of metric (a name with its opening brace) whose
// labels contain label.
func sumWhere(values map[string]float64, metric, label string) float64 {
	var sum float64
	for name, v := range values {
		if strings.HasPrefix(name, metric) && strings.Contains(name, label) {
			sum += v
		}
	}
	return sum
}

func printJSON(out map[string]any) error {
	for k, v := range out {
		if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			out[k] = nil
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}
