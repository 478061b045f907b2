package rules

import (
	"fmt"
	"strings"
	"time"
)

// Severity of a rule's violations, as the API shows it.
type Severity string

// Severities, from most to least urgent.
const (
	SeverityCritical Severity = "CRITICAL"
	SeverityHigh     Severity = "HIGH"
	SeverityMedium   Severity = "MEDIUM"
	SeverityLow      Severity = "LOW"
	SeverityInfo     Severity = "INFO"
)

// ParseSeverity accepts a severity in any case.
func ParseSeverity(s string) (Severity, error) {
	switch v := Severity(strings.ToUpper(strings.TrimSpace(s))); v {
	case SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow, SeverityInfo:
		return v, nil
	}
	return "", fmt.Errorf("unknown severity %q: use CRITICAL, HIGH, MEDIUM, LOW or INFO", s)
}

// State is what a rule is doing now.
type State string

// States of a rule. A manual disable wins over quarantine.
const (
	StateActive      State = "active"
	StateDisabled    State = "disabled"
	StateQuarantined State = "quarantined"
)

// ParseState accepts a state in any case.
func ParseState(s string) (State, error) {
	switch v := State(strings.ToLower(strings.TrimSpace(s))); v {
	case StateActive, StateDisabled, StateQuarantined:
		return v, nil
	}
	return "", fmt.Errorf("unknown state %q: use active, disabled or quarantined", s)
}

// Module identifies one stored module version of a rule.
type Module struct {
	Version    int       `json:"version"`
	SHA256     string    `json:"sha256"` // hex; the module's address in the store
	SizeBytes  int       `json:"sizeBytes"`
	ABIVersion int       `json:"abiVersion"`
	Source     string    `json:"source"` // "wasm", or "dsl" for compiled expressions
	CreatedAt  time.Time `json:"createdAt"`
}

// Limits are the sandbox limits an operator set for a rule; zero means the
// default.
type Limits struct {
	Fuel        uint64 `json:"fuel"`
	MemoryPages uint32 `json:"memoryPages"`
	// Share is the rule's own share of the evaluation workers while
	// traces wait (0 to 1); 0 leaves it to the service's BETRACE_RULE_SHARE.
	Share float64 `json:"share,omitempty"`
}

// MaxVersions is how many module versions a rule keeps for rollback.
const MaxVersions = 10

// Record is a rule as stored: metadata, state and module history.
type Record struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Severity    Severity    `json:"severity"`
	Tags        []string    `json:"tags"`
	Enabled     bool        `json:"enabled"`
	Quarantine  *Quarantine `json:"quarantine,omitempty"`
	Limits      Limits      `json:"limits"`
	Expression  string      `json:"expression,omitempty"`
	// Module is the version in force; Versions holds the most recent
	// versions, oldest first, including Module.
	Module   Module   `json:"module"`
	Versions []Module `json:"versions"`
	// Shadow is a version installed in shadow: it runs on live traffic
	// beside Module, its violations stored marked shadow and never
	// exported, until it is promoted (it becomes the newest version, under
	// the number it carries) or dropped.
	Shadow    *Module   `json:"shadow,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Revision increases with every change; stores use it to order
	// concurrent writers and caches to notice staleness.
	Revision int64 `json:"revision"`
}

// State derives the rule's state: disabled wins, then quarantined.
func (r *Record) State() State {
	switch {
	case !r.Enabled:
		return StateDisabled
	case r.Quarantine != nil:
		return StateQuarantined
	}
	return StateActive
}

// AddVersion makes m the module in force, numbering it after the newest
// version and keeping at most MaxVersions.
func (r *Record) AddVersion(m Module) {
	next := 1
	if n := len(r.Versions); n > 0 {
		next = r.Versions[n-1].Version + 1
	}
	m.Version = next
	r.Versions = append(r.Versions, m)
	if len(r.Versions) > MaxVersions {
		r.Versions = append([]Module(nil), r.Versions[len(r.Versions)-MaxVersions:]...)
	}
	r.Module = m
}

// ValidateID checks a rule ID: 1–128 characters of letters, digits, '-',
// '_' and '.', so it is safe in URLs, keys and metric labels.
func ValidateID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("rule id %q must be 1 to 128 characters", id)
	}
	if id == "." || id == ".." {
		// URL paths clean them away: /v1/rules/.. is /v1, so such a rule
		// could never be read, disabled or deleted.
		return fmt.Errorf("rule id %q is a path segment of its own: choose another", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("rule id %q may contain only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}
