// Package gitops owns every git invocation grove makes.
//
// All git commands go through one runner (run / runGit) that executes the
// system git binary with an argv, never a shell, with hooks and auto-gc off
// (-c core.hooksPath=/dev/null -c gc.auto=0), no terminal prompts and the C
// locale. A failed command becomes a *GitError carrying its arguments, exit
// code and stderr; no git error is discarded.
//
// A Repo is a resolved repository (Open). Operations that change shared
// repository state — worktree add/remove/prune, branch creation and
// deletion, moving a target branch, touching the main checkout — run under
// Repo.Lock, an flock on <common dir>/grove.lock that serialises goroutines
// and processes alike. Slow work that only touches one worktree (checkout,
// status, staging, committing, diffs, snapshots) runs outside the lock.
// Known transient git failures (lock files, the worktree-add commondir
// race) are retried with a short backoff inside the operations that hit
// them.
//
// Lifecycle of a workspace:
//
//	CreateWorktree -> (agent runs) -> CommitAll -> Diff/DiffStat -> Apply
//	AtRisk -> [Snapshot] -> RemoveWorktree        Restore (from a snapshot)
//	AtRisk (safe) -> RetireWorktree               SweepTrash (at start)
//
// AtRisk is the at-risk gate: it never answers with a bare boolean but
// with a Report naming every reason removal would lose work, and it fails
// closed (any git error is a risk). RemoveWorktree does not consult it;
// callers must. A forced removal is Snapshot, then RemoveWorktree: it
// forces git only when a snapshot under refs/grove/snapshots/ records the
// worktree exactly as it is (SnapshotCovers), so no work is destroyed
// without a snapshot even when a caller gets the order wrong.
// RetireWorktree is the fast removal of a worktree the gate found safe: it
// moves the worktree into a trash directory, re-checks it there against
// what the gate's Report recorded (moving it back if anything changed),
// and deletes the files outside the lock. Removals drop git's record of
// their own worktree only; Prune (an explicit command) clears the records
// of every worktree whose directory is gone.
package gitops
