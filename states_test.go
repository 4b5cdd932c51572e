package grove

import (
	"slices"
	"testing"
)

// reach returns the states reachable from start through moves.
func reach[S comparable](start S, moves func(S) []S) map[S]bool {
	seen := map[S]bool{start: true}
	todo := []S{start}
	for len(todo) > 0 {
		s := todo[0]
		todo = todo[1:]
		for _, n := range moves(s) {
			if !seen[n] {
				seen[n] = true
				todo = append(todo, n)
			}
		}
	}
	return seen
}

func TestTaskStateMachine(t *testing.T) {
	// Every state is in the table and reachable from queued, and an end
	// state (applied, discarded or closed: the outcomes) is reachable
	// from every state.
	if len(taskMoves) != len(AllStates) {
		t.Fatalf("table has %d states, AllStates %d", len(taskMoves), len(AllStates))
	}
	fromQueued := reach(StateQueued, TaskState.Moves)
	for _, s := range AllStates {
		if !fromQueued[s] {
			t.Errorf("state %s unreachable from queued", s)
		}
		ends := reach(s, TaskState.Moves)
		if !ends[StateClosed] && !ends[StateApplied] && !ends[StateDiscarded] {
			t.Errorf("no end state reachable from %s: a task could be stuck there", s)
		}
		for to := range taskMoves[s] {
			if !to.Valid() {
				t.Errorf("move %s -> %s: unknown state", s, to)
			}
		}
		if s.Terminal() != slices.Contains(endStates, s) {
			t.Errorf("%s: terminal=%v", s, s.Terminal())
		}
	}
	if TaskState("bogus").CanMove(StateQueued) || StateQueued.CanMove("bogus") || TaskState("bogus").Settled() {
		t.Error("an unknown state moves or is settled")
	}
}

// endStates are the task states nothing leaves: the outcome stays after the
// worktree is removed (issue 15).
var endStates = []TaskState{StateApplied, StateClosed, StateDiscarded}

// The derived sets are what the pipeline relies on: `grove wait` returns on
// a settled task, a close starts from a finished one, a stage fails only an
// unsettled one.
func TestDerivedStateSets(t *testing.T) {
	settled := []TaskState{StateReview, StateApplied, StateClosed, StateConflict, StateFailed, StateCanceled, StateDiscarded}
	if got := ClosableStates(); !slices.Equal(got, filterStates(func(s TaskState) bool { return slices.Contains(settled, s) })) {
		t.Errorf("closable = %v", got)
	}
	if got, want := StageStates(), []TaskState{StateQueued, StatePreparing, StateRunning, StateDiffing, StateApplying}; !slices.Equal(got, want) {
		t.Errorf("stage states = %v, want %v", got, want)
	}
	for _, s := range AllStates {
		if s.Settled() != slices.Contains(settled, s) || s.Finished() != s.Settled() {
			t.Errorf("%s: settled=%v finished=%v", s, s.Settled(), s.Finished())
		}
	}
}

// usedTaskMoves are the transitions the code makes (grep -rn 'SetState(ctx'
// and store.Retry); each must be in the table.
var usedTaskMoves = [][2]TaskState{
	{StateQueued, StatePreparing},                                // create_worktree, attach
	{StatePreparing, StatePreparing},                             // attach: a session task's turn
	{StatePreparing, StateRunning},                               // run_agent start, adopt
	{StatePreparing, StateDiffing}, {StateRunning, StateDiffing}, // run_agent finish
	{StatePreparing, StateFailed}, {StateRunning, StateFailed}, // run_agent finish (lost, timeout)
	{StatePreparing, StateCanceled}, {StateRunning, StateCanceled}, // run_agent finish, handOff
	{StateQueued, StateCanceled},                            // cancel
	{StateQueued, StateFailed}, {StateDiffing, StateFailed}, // fail (stage errors)
	{StateApplying, StateFailed},                                  // fail
	{StateDiffing, StateReview},                                   // diff
	{StateReview, StateApplying},                                  // apply intent, auto apply
	{StateApplying, StateApplied}, {StateApplying, StateConflict}, // apply
	{StateApplying, StateReview},                                   // apply refused
	{StateReview, StateDiscarded}, {StateConflict, StateDiscarded}, // discard
	{StateReview, StateClosed}, {StateConflict, StateClosed}, // close, reaper
	{StateFailed, StateQueued}, {StateCanceled, StateQueued}, // retry
}

func TestUsedTaskMovesAllowed(t *testing.T) {
	for _, m := range usedTaskMoves {
		if !m[0].CanMove(m[1]) {
			t.Errorf("code moves %s -> %s, the table does not allow it", m[0], m[1])
		}
	}
	for _, bad := range [][2]TaskState{{StateClosed, StateQueued}, {StateApplied, StateReview}, {StateRunning, StateApplied}, {StateReview, StateRunning},
		{StateApplied, StateClosed}, {StateDiscarded, StateClosed}} { // an outcome stays after close
		if bad[0].CanMove(bad[1]) {
			t.Errorf("table allows %s -> %s", bad[0], bad[1])
		}
	}
}

func TestWorkspaceStateMachine(t *testing.T) {
	if len(workspaceMoves) != len(AllWorkspaceStates) {
		t.Fatalf("table has %d states, AllWorkspaceStates %d", len(workspaceMoves), len(AllWorkspaceStates))
	}
	moves := func(s WorkspaceState) []WorkspaceState { return workspaceMoves[s] }
	from := reach(WorkspaceCreating, moves)
	for k, v := range reach(WorkspacePoolCreating, moves) {
		from[k] = from[k] || v
	}
	for _, s := range AllWorkspaceStates {
		if !from[s] {
			t.Errorf("workspace state %s unreachable", s)
		}
		if !reach(s, moves)[WorkspaceRemoved] {
			t.Errorf("removed unreachable from %s", s)
		}
		if !CanMoveWorkspace(s, s) {
			t.Errorf("%s -> %s (a repeated stage) refused", s, s)
		}
	}
	used := [][2]WorkspaceState{
		{WorkspaceCreating, WorkspaceReady}, {WorkspaceReady, WorkspaceRemoving}, {WorkspaceRemoving, WorkspaceReady},
		{WorkspaceRemoving, WorkspaceRemoved}, {WorkspacePool, WorkspaceClaiming}, {WorkspaceClaiming, WorkspaceReady},
		{WorkspaceClaiming, WorkspaceStale}, {WorkspacePool, WorkspacePoolMoving}, {WorkspacePoolCreating, WorkspacePoolMoving},
		{WorkspacePoolMoving, WorkspacePool}, {WorkspacePoolMoving, WorkspaceStale}, {WorkspaceCreating, WorkspaceRemoving},
	}
	for _, m := range used {
		if !CanMoveWorkspace(m[0], m[1]) {
			t.Errorf("code moves workspace %s -> %s, the table does not allow it", m[0], m[1])
		}
	}
	if CanMoveWorkspace(WorkspaceRemoved, WorkspaceReady) || CanMoveWorkspace(WorkspaceStale, WorkspacePool) || CanMoveWorkspace("bogus", "bogus") {
		t.Error("workspace table allows a forbidden move")
	}
}
