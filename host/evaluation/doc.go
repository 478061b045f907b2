// Package evaluation runs one completed trace through every enabled rule.
//
// The trace is encoded once (package abi) and the same bytes go to each
// rule's sandbox in turn, each call under that rule's own fuel budget. A
// sandbox fault becomes a strike against that rule alone (package rules); a
// quarantined rule is skipped from then on. One slow, broken or hostile rule
// therefore costs the others nothing but the time it is allowed to burn,
// and that time is bounded by its fuel.
//
// # Concurrency
//
// An Evaluator owns an encoder and scratch buffers: use one per worker. The
// rules it is given may be shared by many evaluators.
package evaluation
