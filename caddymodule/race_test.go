//go:build race

package caddymodule

// raceEnabled is true under the race detector, which changes allocation
// counts (and makes sync.Pool drop items on purpose).
const raceEnabled = true
