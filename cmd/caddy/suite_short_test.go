//go:build !long

package main

// longSuite is false in the default run (CI); the long suite is the build
// tag "long": go test -tags long ./...
const longSuite = false
