// Package deploytest checks the deployment files under deploy/ against the
// real BeTrace binary. It has no code of its own, only tests:
//
//   - every metric named by an expression in deploy/prometheus/alerts.yaml
//     and in deploy/grafana/*.json (when that folder exists) is exported by
//     a running `betrace serve`: an embedded-store server that evaluated
//     violating traces, quarantined a faulting rule and answered a 404 and a
//     malformed request, and, for the metrics of cluster mode, a server on a
//     real redis-server whose peer died;
//   - the label names the alerts select on exist on those metrics, and the
//     gauges the resource alerts divide by hold what the alerts assume;
//   - each alert's runbook_url names a file of deploy/runbooks/, once that
//     folder exists.
//
// The tests build cmd/betrace themselves and need the example rules
// (`make rules`) and redis-server on PATH. The alerts' behaviour is tested
// by promtool (deploy/prometheus/check.sh), not here.
package deploytest
