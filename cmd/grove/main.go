// Command grove runs coding agents (or any command) in isolated git
// worktrees, as durable jobs in an embedded SQLite queue. See README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/grove-dev/grove/jobs/supervise"
	_ "github.com/grove-dev/grove/jobs/supervise/prefault" // fewer page faults before main
)

func main() {
	// A CLI process lives for milliseconds: collecting garbage while it
	// reads 10,000 tasks costs more than the memory it would save. The
	// daemon (serve) sets its own percentage back to the default.
	debug.SetGCPercent(400)
	// The supervisor (started once per agent, by the daemon, with exactly
	// these arguments) skips building the command tree: it is on the path
	// from submit to the agent's start.
	if len(os.Args) == 3 && os.Args[1] == "supervise" {
		if err := supervise.MainArg(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "grove:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
