package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// rulesFile is the earlier project's rules file: a list of rules written in
// the DSL. `betrace rules push rules.yaml` moves one over in one command.
type rulesFile struct {
	Rules []struct {
		ID          string   `yaml:"id"`
		Name        string   `yaml:"name"`
		Description string   `yaml:"description"`
		Severity    string   `yaml:"severity"`
		Condition   string   `yaml:"condition"`
		Expression  string   `yaml:"expression"`
		Enabled     *bool    `yaml:"enabled"`
		Tags        []string `yaml:"tags"`
	} `yaml:"rules"`
}

// isRulesFile tells a rules file from a module by its name.
func isRulesFile(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// ruleBody is one rule of a rules file as the JSON body of POST /v1/rules.
type ruleBody struct {
	id   string
	body []byte
}

func readRulesFile(path string) ([]ruleBody, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read it: %w", err)
	}
	var f rulesFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("not a rules file: %w", err)
	}
	if len(f.Rules) == 0 {
		return nil, fmt.Errorf("no rules: expected a top-level `rules:` list of {id, name, description, severity, condition}")
	}
	out := make([]ruleBody, 0, len(f.Rules))
	for i, r := range f.Rules {
		expr := r.Condition
		if expr == "" {
			expr = r.Expression
		}
		if expr == "" {
			return nil, fmt.Errorf("rule %d (%s) has no condition", i+1, r.ID)
		}
		m := map[string]any{"expression": expr, "name": r.Name, "description": strings.TrimSpace(r.Description)}
		if r.ID != "" {
			m["id"] = r.ID
		}
		if r.Severity != "" {
			m["severity"] = r.Severity
		}
		if r.Enabled != nil {
			m["enabled"] = *r.Enabled
		}
		if r.Tags != nil {
			m["tags"] = r.Tags
		}
		body, _ := json.Marshal(m)
		label := r.ID
		if label == "" {
			label = r.Name
		}
		out = append(out, ruleBody{id: label, body: body})
	}
	return out, nil
}
