package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// Restore recreates a task's worktree from the snapshot a forced close
// took (the workspace's snapshot_ref, else refs/grove/snapshots/<id>): at
// path ("" = where it was) on branch grove/<id>/work, or grove/<id>/work-restored[-N]
// when that branch exists, with the same files, index and flags
// (gitops.RestoreWith: nested repositories, the operation in progress and
// the lock too). It records a new live workspace row for the task (the
// old one stays archived) and an event, and returns the row. It works
// without a daemon; the repository lock is taken for the worktree add.
//
// It refuses, with a *grove.UserError, a task without a snapshot, a task
// whose worktree is still there (unless path names another place), and a
// path that exists and is not empty. On failure nothing is left behind:
// the new row is archived and gitops.Restore removes what it created.
func Restore(ctx context.Context, d *Deps, taskID, path string) (grove.Workspace, error) {
	task, err := d.Store.Task(ctx, taskID)
	if err != nil {
		return grove.Workspace{}, err
	}
	old, err := d.Store.TaskWorkspace(ctx, taskID)
	if errors.Is(err, grove.ErrNotFound) {
		return old, grove.Userf(grove.ErrNotFound, "only a worktree closed with grove close --force has a snapshot",
			"task %s never had a worktree", taskID)
	}
	if err != nil {
		return old, err
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return old, err
	}
	ref := old.SnapshotRef
	if ref == "" {
		if c, err := repo.RefCommit(ctx, SnapshotRef(taskID)); err != nil {
			return old, err
		} else if c != "" {
			ref = SnapshotRef(taskID)
		}
	}
	if ref == "" {
		return old, grove.Userf(grove.ErrNotFound, "only grove close --force takes a snapshot", "task %s has no snapshot", taskID)
	}
	if path == "" {
		path = old.Path
	}
	if path, err = filepath.Abs(path); err != nil {
		return old, fmt.Errorf("restore task %s: %w", taskID, err)
	}
	if old.State != grove.WorkspaceRemoved && pathExists(old.Path) && path == old.Path {
		return old, grove.Userf(grove.ErrConflict, "restore it elsewhere with --path DIR, or close it first",
			"task %s still has its worktree at %s", taskID, old.Path)
	}
	if ents, err := os.ReadDir(path); err == nil && len(ents) > 0 {
		return old, grove.Userf(grove.ErrConflict, "pick another place with --path DIR", "%s already exists and is not empty", path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return old, grove.Userf(grove.ErrUsage, "pick another place with --path DIR", "cannot use %s: %v", path, err)
	}
	branch, err := freeBranch(ctx, repo, TaskBranch(taskID))
	if err != nil {
		return old, err
	}

	ws := grove.Workspace{RepoID: task.RepoID, TaskID: taskID, Path: path, Branch: branch,
		BaseCommit: old.BaseCommit, State: grove.WorkspaceCreating}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		ws, err = tx.PutWorkspace(ctx, ws)
		if err != nil {
			return err
		}
		if ws.TaskID != taskID || ws.Branch != branch {
			return grove.Userf(grove.ErrConflict, "pick another place with --path DIR, or let grove reap prune it",
				"%s is recorded as another worktree", path)
		}
		return nil
	})
	if err != nil {
		return ws, err
	}
	notes, err := repo.RestoreWith(ctx, ref, path, branch)
	if err != nil {
		if aerr := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.ArchiveWorkspace(ctx, ws.ID) }); aerr != nil {
			err = fmt.Errorf("%w (archive workspace: %v)", err, aerr)
		}
		return ws, err
	}
	head, err := repo.RefCommit(ctx, "refs/heads/"+branch)
	if err != nil {
		return ws, err
	}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceState(ctx, ws.ID, grove.WorkspaceReady); err != nil {
			return err
		}
		if err := tx.SetWorkspaceHead(ctx, ws.ID, head); err != nil {
			return err
		}
		if err := tx.SetWorkspaceSnapshot(ctx, ws.ID, ref); err != nil {
			return err
		}
		msg := fmt.Sprintf("worktree restored from %s at %s on %s", ref, path, branch)
		if len(notes) > 0 {
			msg += "; " + strings.Join(notes, "; ")
		}
		return tx.AddEvent(ctx, taskID, "", "restored", msg)
	})
	if err != nil {
		return ws, err
	}
	ws.State, ws.HeadCommit, ws.SnapshotRef = grove.WorkspaceReady, head, ref
	return ws, nil
}

// freeBranch is want if no such branch exists, else want-restored,
// want-restored-2, ...
func freeBranch(ctx context.Context, repo *gitops.Repo, want string) (string, error) {
	for i := 0; i < 100; i++ {
		name := want
		switch {
		case i == 1:
			name += "-restored"
		case i > 1:
			name += "-restored-" + strconv.Itoa(i)
		}
		ok, err := repo.IsLocalBranch(ctx, name)
		if err != nil {
			return "", err
		}
		if !ok {
			return name, nil
		}
	}
	return "", grove.Userf(grove.ErrConflict, "delete old "+want+"-restored-* branches", "no free branch name like %s", want)
}

func pathExists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, fs.ErrNotExist)
}
