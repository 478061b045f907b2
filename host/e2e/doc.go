// Package e2e holds BeTrace's end-to-end tests. It has no code of its own:
// everything is in _test.go files.
//
// The tests build the real binary (go build ./cmd/betrace) once, then start
// `betrace serve` as a child process for each scenario, on free loopback
// ports with a fresh data directory and short trace timings, and talk to it
// only the way operators and OpenTelemetry senders do: the HTTP API,
// OTLP/HTTP (protobuf and JSON, gzip), OTLP/gRPC, the legacy /v1/spans
// endpoint, /metrics, signals (SIGTERM, SIGKILL) and the runbook's curl
// commands run by bash.
//
// What is covered: health, readiness and the metric names; the rules API
// (both upload forms, filters, versions, rollback, enable/disable, delete);
// ingest over every transport with the example rules' expected violations;
// the violation filters and paging; rule isolation and quarantine; bad
// input that must be refused without changing anything, and the API and
// ingest tokens; the runbook README commands; durability across kill -9;
// graceful shutdown; violation export to an OTLP/HTTP collector; every
// recorded response checked against api/openapi.yaml; and clusters of three
// instances on a real redis-server (cluster_test.go): rule propagation,
// spans of one trace spread over all instances, cluster-wide quarantine,
// SIGKILL of a member, a Redis outage, and Redis coming back empty.
// BETRACE_CLUSTER_FIGURES=1 turns the short throughput run into the
// measurement reported in the README.
//
// Run it with the example rules built:
//
//	make rules
//	go test -count=1 ./host/e2e/
//
// The runbook test needs bash, curl and jq on PATH. TestMain warms a
// compilation cache once and links it into each server's data directory,
// so each server compiles no rule module again.
package e2e
