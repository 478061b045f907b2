// Command ai-tool-approval is a BeTrace rule: an AI agent may only run a
// high-risk tool after a human approved it.
//
// A span named agent.tool_call with attribute tool.risk = "high" needs a
// span named human.approval in the same trace that started before it;
// otherwise the tool call is a violation. Trace fragments are skipped, since
// the approval may be in the part of the trace evaluated elsewhere.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

func init() {
	rule.Register(rule.Info{
		ID:          "ai-tool-approval",
		Name:        "High-risk agent tool call without human approval",
		Severity:    rule.SeverityHigh,
		Description: "An agent.tool_call with tool.risk=high must be preceded by a human.approval span in the same trace.",
		Tags:        []string{"ai", "agents", "safety"},
	}, check)
}

func check(t *rule.Trace) {
	if t.Fragment() {
		return
	}
	// Spans are in start order, so the first approval is the earliest:
	// a call is approved when that one started before it. One look, not a
	// scan per call, keeps the rule linear in the trace's size.
	first, approved := t.FindByName("human.approval")
	for call := range t.SpansNamed("agent.tool_call") {
		if risk, _ := call.Str("tool.risk"); risk != "high" {
			continue
		}
		if approved && first.Start() < call.Start() {
			continue
		}
		tool, _ := call.Str("tool.name")
		t.Report(call, "high-risk agent.tool_call without a human.approval that started before it",
			rule.Attr("tool.name", tool),
			rule.Attr("service", call.Service()),
		)
	}
}

func main() {}
