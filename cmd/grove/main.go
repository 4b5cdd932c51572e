// Command grove runs coding agents (or any command) in isolated git
// worktrees, as durable jobs in an embedded SQLite queue. See README.md.
package main

import (
	"context"
	"os"
	"runtime/debug"
)

func main() {
	// A CLI process lives for milliseconds: collecting garbage while it
	// reads 10,000 tasks costs more than the memory it would save. The
	// daemon (serve) sets its own percentage back to the default.
	debug.SetGCPercent(400)
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
