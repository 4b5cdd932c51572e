package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/grove-dev/grove"
)

// DefaultKeepRefs is how long `grove serve` keeps a finished task's
// refs/grove/tasks/<id> (its change; a discarded task's only copy) by
// default: --keep-refs.
const DefaultKeepRefs = 30 * 24 * time.Hour

// taskRefsPrefix is where a task's change is kept (TaskRef).
const taskRefsPrefix = "refs/grove/tasks/"

// refExpired reports whether the ref of task t may go at now with keep:
// the task is over (applied, discarded, closed, failed or canceled: a
// review or conflict still waits on a person, a running one writes it),
// its worktree is removed, and it has not changed for keep.
func refExpired(t grove.Task, worktree string, now time.Time, keep time.Duration) bool {
	over := in(t.State, grove.StateApplied, grove.StateDiscarded, grove.StateClosed, grove.StateFailed, grove.StateCanceled)
	return over && (worktree == grove.WorkspaceRemoved || worktree == "") && now.Sub(t.UpdatedAt) >= keep
}

// PruneTaskRefs removes, in every known repository, the refs/grove/tasks/*
// of tasks over for longer than d.KeepRefs (0: kept forever), each with a
// compare-and-swap and a "ref_pruned" event on its task. A ref whose task
// this home does not know is left alone (another home's, or a person's).
// It returns the refs removed (with dryRun, the refs it would remove).
func PruneTaskRefs(ctx context.Context, d *Deps, now time.Time, dryRun bool) ([]string, error) {
	if d.KeepRefs <= 0 {
		return nil, nil
	}
	repos, err := d.Store.Repos(ctx)
	if err != nil {
		return nil, err
	}
	var pruned []string
	var errs []error
	for _, rr := range repos {
		n, err := pruneRepoRefs(ctx, d, rr.Path, now, dryRun)
		pruned = append(pruned, n...)
		if err != nil {
			errs = append(errs, fmt.Errorf("task refs of %s: %w", rr.Path, err))
		}
	}
	return pruned, errors.Join(errs...)
}

func pruneRepoRefs(ctx context.Context, d *Deps, repoPath string, now time.Time, dryRun bool) ([]string, error) {
	repo, err := d.Repo(ctx, repoPath)
	if err != nil {
		return nil, err
	}
	refs, err := repo.RefsUnder(ctx, taskRefsPrefix)
	if err != nil || len(refs) == 0 {
		return nil, err
	}
	ids := make([]string, 0, len(refs))
	for ref := range refs {
		ids = append(ids, strings.TrimPrefix(ref, taskRefsPrefix))
	}
	outcomes, err := d.Store.TaskOutcomes(ctx, ids)
	if err != nil {
		return nil, err
	}
	var pruned []string
	for _, id := range ids {
		t, err := d.Store.Task(ctx, id)
		if errors.Is(err, grove.ErrNotFound) {
			continue // not this home's task
		}
		if err != nil {
			return pruned, err
		}
		if !refExpired(t, outcomes[id].Worktree, now, d.KeepRefs) {
			continue
		}
		ref, sha := TaskRef(id), refs[TaskRef(id)]
		if dryRun {
			pruned = append(pruned, ref)
			continue
		}
		if err := repo.DeleteRefIf(ctx, ref, sha); err != nil {
			return pruned, err
		}
		pruned = append(pruned, ref)
		msg := fmt.Sprintf("%s (%.12s) removed: the task has been %s for over %s (--keep-refs)", ref, sha, t.State, d.KeepRefs)
		if err := d.Store.AddEvent(ctx, id, "", "ref_pruned", msg); err != nil {
			return pruned, err
		}
		d.Logger.Info("task ref removed", "task", id, "ref", ref, "commit", sha, "state", t.State, "keep", d.KeepRefs)
	}
	return pruned, nil
}

// pruneTaskRefsPass is PruneTaskRefs for the reaper: it logs a failure
// instead of failing the pass.
func pruneTaskRefsPass(ctx context.Context, d *Deps, now time.Time, dryRun bool) {
	if dryRun {
		return
	}
	if _, err := PruneTaskRefs(ctx, d, now, false); err != nil {
		d.Logger.Warn("task refs retention", "err", err)
	}
}
