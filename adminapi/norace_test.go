//go:build !race

package adminapi

// raceEnabled: see race_test.go.
const raceEnabled = false
