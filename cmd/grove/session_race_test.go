//go:build race

package main

// raceBuild: the race detector makes every grove process several times
// slower; time budgets that hold for the real binary are scaled.
const raceBuild = true
