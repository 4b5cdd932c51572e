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
//	AtRisk (safe) -> Retire                 AtRisk -> Snapshot -> Retire (Force)
//	Retire (directory gone)                 RestoreTrash (undo)  PurgeTrash (retention)
//	SweepTrash (at start: finishes what a crash interrupted)
//
// Two layers keep work from being lost. AtRisk is the at-risk gate: it
// never answers with a bare boolean but with a Report naming every reason
// removal would lose work, and it fails closed (any git error is a risk);
// it decides when grove refuses. The trash makes every removal undoable
// for a while, whatever the gate missed: Retire, the one function that
// moves, unregisters or deletes a worktree, renames the worktree
// directory and git's administrative dir for it into an entry of the
// trash, with a manifest (JSON) and refs/grove/trash/<entry>/* pinning its
// branch tip and HEAD, and deletes the branch; nothing is deleted then.
// A safe removal re-checks the moved worktree against what the gate's
// Report recorded (moving it back if anything changed); a forced one
// (after a snapshot) moves it as it is; a worktree whose directory is
// gone has only its own record moved, after checking it is not in the
// trash (an interrupted retire, which is finished instead) and not where
// its gitdir file says. PurgeTrash deletes entries past retention (oldest
// first over the byte budget, never one younger than MinAge for space);
// RestoreTrash puts one back, registered with git, exactly as it was.
// Every step is recorded in the manifest and ends at a grove.Failpoint;
// an interrupted step is finished from what is on disk. Any error
// reading or writing a manifest or KEPT marker keeps the entry.
//
// grove never runs `git worktree prune`: it would drop the record of
// every worktree whose directory is missing, a user's on an unmounted
// disk too. RemoveWorktree deletes without the trash and is only Retire's
// fallback across filesystems.
//
// Backups (backup.go, backup_bundle.go, backup_restore.go) push
// refs/grove/*, stash entries and live snapshots (SnapshotCommit) to a
// remote under refs/grove-backup/<box>/<repo key>/ with explicit
// refspecs (PlanBackup, PushBackup), or write them as incremental bundles
// (PlanBundle, WriteBundle); a catalog commit makes new sibling snapshots
// send only their new files. FetchBackup and RestoreStashes bring an
// id's refs into any clone for RestoreWith.
package gitops
