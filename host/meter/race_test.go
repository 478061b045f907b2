//go:build race

package meter

// raceEnabled: the race detector slows wazero's optimizing compiler about
// tenfold, so the Go guest test uses the interpreter under it.
const raceEnabled = true
