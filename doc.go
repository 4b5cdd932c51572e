// Package grove holds the domain types, task states and sentinel errors shared
// by every layer of grove, and embeds schema.sql, grove's own tables.
//
// grove runs coding agents (or any command) in isolated git worktrees on one
// box, as durable River jobs in an embedded SQLite queue. The layers are:
//
//	cmd/grove   CLI and daemon entry point
//	scheduler   cron specs turned into River periodic jobs
//	jobs        one River job kind per file: the stage chain
//	store       every SQL string; opens SQLite; applies migrations
//	gitops      every git invocation; per-repo lock; at-risk gate; snapshots
//	grove       (this package) types, states, errors, schema
//
// Nothing points back up: cmd -> scheduler -> jobs -> {store, gitops} -> grove.
package grove
