// Package rules tracks what each rule is allowed to do: its state (active,
// disabled, quarantined) and the strikes that move an active rule into
// quarantine.
//
// A strike is a sandbox fault that is the rule's own doing: fuel exhausted,
// memory cap reached, a trap or panic, a broken ABI record. One strike is
// noise; QuarantinePolicy.Strikes strikes within QuarantinePolicy.Window
// mean the rule is broken or hostile, and it is quarantined with a record of why (reason, last
// error, fuel used, the trace that tipped it) so an operator can decide.
// Enabling the rule again clears the record and the strikes. A canceled
// evaluation (shutdown, deadline) is never a strike.
package rules
