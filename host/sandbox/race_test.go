//go:build race

package sandbox

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts are meaningless under it; make test runs the
// allocation checks a second time without -race.
const raceEnabled = true
