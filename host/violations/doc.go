// Package violations defines the Violation BeTrace records when a rule
// fires, and the query that lists them. Verdicts become Violations here;
// stores persist them and exporters turn them into spans.
package violations
