//go:build race

package adminapi

// raceEnabled: the race detector makes the store's import about ten times
// slower, so the large import test imports fewer keys under it.
const raceEnabled = true
