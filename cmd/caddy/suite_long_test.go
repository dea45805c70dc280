//go:build long

package main

// longSuite is true with the build tag "long" (go test -tags long ./...):
// more crash rounds, and the soak test.
const longSuite = true
