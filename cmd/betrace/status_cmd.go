package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

func statusCommand() command {
	return command{path: "status", about: "show readiness and each check, cluster members, rules by state and the quarantined rules", maxArgs: 0, setup: status}
}

// ruleStates is the order in which rule counts are shown.
var ruleStates = []string{"active", "disabled", "quarantined"}

// statusDoc is `status --json`.
type statusDoc struct {
	Server         string         `json:"server"`
	Ready          rawJSON        `json:"ready"`
	ClusterMembers *float64       `json:"clusterMembers,omitempty"`
	RuleCounts     map[string]int `json:"ruleCounts"`
	Quarantined    []rawJSON      `json:"quarantined"`
}

func status(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	return func(ctx context.Context, a *app, _ []string) error {
		// Readiness: 200 READY or DEGRADED, 503 NOT_READY; both carry the checks.
		code, body, err := a.c.raw(ctx, request{Method: http.MethodGet, Path: "/ready"})
		if err != nil {
			return err
		}
		var ready readyJSON
		if (code != http.StatusOK && code != http.StatusServiceUnavailable) || json.Unmarshal(body, &ready) != nil || ready.Status == "" {
			if code >= 400 {
				return decodeError(code, body)
			}
			return fmt.Errorf("GET /ready: the answer is not a readiness report: %.200s", body)
		}

		// Cluster members, when the instance is part of a cluster.
		var members *float64
		if mcode, metrics, err := a.c.raw(ctx, request{Method: http.MethodGet, Path: "/metrics"}); err == nil && mcode == http.StatusOK {
			if v, found := metricValue(metrics, "betrace_cluster_members"); found {
				members = &v
			}
		}

		// Rules by state.
		var list struct {
			Rules []json.RawMessage `json:"rules"`
		}
		if _, err := a.c.callJSON(ctx, request{Method: http.MethodGet, Path: "/v1/rules"}, &list); err != nil {
			if !a.g.json {
				a.writeStatus(ready, members, nil, nil)
			}
			return err
		}
		counts := map[string]int{"total": len(list.Rules)}
		for _, s := range ruleStates {
			counts[s] = 0
		}
		var quarantined []ruleJSON
		quarantinedRaw := []rawJSON{}
		for _, raw := range list.Rules {
			var r ruleJSON
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("GET /v1/rules: a rule in the answer is not the JSON expected: %v", err)
			}
			counts[r.State]++
			if r.State == "quarantined" {
				quarantined = append(quarantined, r)
				quarantinedRaw = append(quarantinedRaw, rawJSON(raw))
			}
		}

		if a.g.json {
			if err := a.printValue(statusDoc{Server: a.c.base.String(), Ready: body, ClusterMembers: members, RuleCounts: counts, Quarantined: quarantinedRaw}); err != nil {
				return err
			}
		} else {
			a.writeStatus(ready, members, counts, quarantined)
		}
		if ready.Status == "NOT_READY" || code != http.StatusOK {
			return &reportedError{code: exitFailed}
		}
		return nil
	}
}

// writeStatus shows readiness and, when counts is not nil, the rules.
func (a *app) writeStatus(ready readyJSON, members *float64, counts map[string]int, quarantined []ruleJSON) {
	tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
	version := ""
	if ready.Version != "" {
		version = " (version " + ready.Version + ")"
	}
	fmt.Fprintf(tw, "Server:\t%s%s\n", a.c.base, version)
	fmt.Fprintf(tw, "Status:\t%s\n", ready.Status)
	names := make([]string, 0, len(ready.Checks))
	for n := range ready.Checks {
		names = append(names, n)
	}
	sort.Strings(names)
	label := "Checks:"
	for _, n := range names {
		fmt.Fprintf(tw, "%s\t%s: %s\n", label, n, cell(ready.Checks[n]))
		label = ""
	}
	if members != nil {
		fmt.Fprintf(tw, "Cluster:\t%g members\n", *members)
	}
	if counts != nil {
		fmt.Fprintf(tw, "Rules:\t%d (%s)\n", counts["total"], countsText(counts))
	}
	tw.Flush()
	if len(quarantined) == 0 {
		return
	}
	fmt.Fprintln(a.stdout)
	rows := make([][]string, len(quarantined))
	for i, r := range quarantined {
		since := ""
		if r.Quarantine != nil {
			since = formatTime(r.Quarantine.At)
		}
		rows[i] = []string{r.ID, since, r.StateReason}
	}
	writeTable(a.stdout, []string{"QUARANTINED", "SINCE", "REASON"}, rows)
}

// countsText lists the rule counts: the known states in order, then any
// state this CLI does not know yet.
func countsText(counts map[string]int) string {
	parts := make([]string, 0, len(counts))
	for _, s := range ruleStates {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
	}
	var other []string
	for s := range counts {
		if s != "total" && !slices.Contains(ruleStates, s) {
			other = append(other, s)
		}
	}
	sort.Strings(other)
	for _, s := range other {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
	}
	return strings.Join(parts, ", ")
}
