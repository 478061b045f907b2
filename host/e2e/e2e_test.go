package e2e

import "testing"

// TestE2E runs every scenario in parallel, each on servers of its own, and
// then checks every answer they recorded against api/openapi.yaml.
func TestE2E(t *testing.T) {
	recorded.Lock()
	recorded.list = nil // -count=N: check each run's answers once
	recorded.Unlock()
	t.Run("Scenarios", func(t *testing.T) {
		for _, sc := range []struct {
			name string
			fn   func(*testing.T)
		}{
			{"Health", testHealth},
			{"RulesAPI", testRulesAPI},
			{"Ingest", testIngest},
			{"ViolationFilters", testViolationFilters},
			{"EnableDisable", testEnableDisable},
			{"Isolation", testIsolation},
			{"BadInput", testBadInput},
			{"MethodNotAllowed", testMethodNotAllowed},
			{"Tokens", testTokens},
			{"Runbook", testRunbook},
			{"Durability", testDurability},
			{"GracefulShutdown", testGracefulShutdown},
			{"Export", testExport},
			{"OpenAPIPathsServed", testOpenAPIPathsServed},
			{"DSLRules", testDSLRules},
		} {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sc.fn(t)
			})
		}
	})
	t.Run("OpenAPIResponses", testOpenAPIResponses)
}
