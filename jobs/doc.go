// Package jobs holds grove's River job kinds, one per file (args + worker),
// and the intents (submit, apply, cancel, close, discard, retry) that record
// a state change and enqueue the job that carries it out, in one transaction.
//
// The stage chain: create_worktree -> [setup] -> run_agent -> diff -> [review]
// -> apply -> close (setup only when .grove.toml asks for it and the
// worktree is not set up under the same key yet; see setup.go). Every
// worker follows the same rules (the README, "How it works"): it loads
// the task and returns nil if the task is already past its stage; it
// checks every external effect before doing it again; it records its
// result and inserts the next job in one transaction; and it ends a task
// with a clear message on a user error instead of retrying.
package jobs
