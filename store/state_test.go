package store

import (
	"context"
	"errors"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// SetState goes through the state machine: a move the table does not allow
// is an error and changes nothing; a task in none of `from` is a lost race
// (false, no error); Retry is a move like any other.
func TestSetStateRefusesMovesOutsideTheTable(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		is.NoErr(st.InTx(ctx, func(tx *Tx) error {
			repo, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/r", CommonDir: "/r/.git", DefaultBranch: "main"})
			if err != nil {
				return err
			}
			_, _, err = tx.InsertTask(ctx, grove.Task{ID: "tstate01", RepoID: repo, BaseRef: "main", BaseCommit: "abc",
				TargetBranch: "main", Argv: []string{"true"}, Apply: grove.ApplyManual, State: grove.StateQueued})
			return err
		}))
		set := func(from []grove.TaskState, to grove.TaskState) (ok bool, err error) {
			err = st.InTx(ctx, func(tx *Tx) error {
				ok, err = tx.SetState(ctx, "tstate01", from, to, "")
				return err
			})
			return ok, err
		}
		ok, err := set(nil, grove.StateApplied) // queued -> applied: not a move
		var te *grove.TransitionError
		is.True(errors.As(err, &te))
		is.True(errors.Is(err, grove.ErrConflict))
		is.True(!ok)
		task, err := st.Task(ctx, "tstate01")
		is.NoErr(err)
		is.Equal(task.State, grove.StateQueued) // unchanged

		ok, err = set([]grove.TaskState{grove.StateRunning}, grove.StateDiffing) // lost race
		is.NoErr(err)
		is.True(!ok)
		ok, err = set([]grove.TaskState{grove.StateQueued}, grove.StatePreparing)
		is.NoErr(err)
		is.True(ok)

		// Retry only from failed or canceled.
		err = st.InTx(ctx, func(tx *Tx) error { return tx.Retry(ctx, "tstate01") })
		is.True(errors.As(err, &te))
		ok, err = set(nil, grove.StateFailed)
		is.NoErr(err)
		is.True(ok)
		is.NoErr(st.InTx(ctx, func(tx *Tx) error { return tx.Retry(ctx, "tstate01") }))
		task, err = st.Task(ctx, "tstate01")
		is.NoErr(err)
		is.Equal(task.State, grove.StateQueued)
		is.Equal(task.Attempt, 2)
	})
}

// Workspace state updates go through grove.CanMoveWorkspace: an archived
// (removed) workspace never comes back to ready, a removal's claim does.
func TestWorkspaceStateMovesFollowTheTable(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		var ws grove.Workspace
		is.NoErr(st.InTx(ctx, func(tx *Tx) error {
			repo, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/r", CommonDir: "/r/.git", DefaultBranch: "main"})
			if err != nil {
				return err
			}
			ws, err = tx.PutWorkspace(ctx, grove.Workspace{RepoID: repo, Path: "/r/wt", Branch: "grove/x", BaseCommit: "abc", State: grove.WorkspaceReady})
			return err
		}))
		swap := func(from, to string) (ok bool, err error) {
			err = st.InTx(ctx, func(tx *Tx) error { ok, err = tx.SwapWorkspaceState(ctx, ws.ID, from, to); return err })
			return ok, err
		}
		ok, err := swap(grove.WorkspaceReady, grove.WorkspaceRemoving) // a removal's claim
		is.NoErr(err)
		is.True(ok)
		ok, err = swap(grove.WorkspaceRemoving, grove.WorkspaceRemoved)
		is.NoErr(err)
		is.True(ok)
		_, err = swap(grove.WorkspaceRemoved, grove.WorkspaceReady) // never back from removed
		is.True(errors.Is(err, grove.ErrConflict))
		err = st.InTx(ctx, func(tx *Tx) error { return tx.SetWorkspaceState(ctx, ws.ID, grove.WorkspaceReady) })
		is.True(errors.Is(err, grove.ErrConflict))
	})
}
