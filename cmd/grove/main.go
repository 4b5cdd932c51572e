// Command grove runs coding agents (or any command) in isolated git
// worktrees, as durable jobs in an embedded SQLite queue. See README.md.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
