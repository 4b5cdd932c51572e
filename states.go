package grove

import (
	"fmt"
	"slices"
)

// TaskState is where a task is in its pipeline.
type TaskState string

// Task states. See the README, "How it works".
const (
	StateQueued    TaskState = "queued"
	StatePreparing TaskState = "preparing"
	StateRunning   TaskState = "running"
	StateDiffing   TaskState = "diffing"
	StateReview    TaskState = "review"
	StateApplying  TaskState = "applying"
	StateApplied   TaskState = "applied"
	StateClosed    TaskState = "closed"
	StateConflict  TaskState = "conflict"
	StateFailed    TaskState = "failed"
	StateCanceled  TaskState = "canceled"
	StateDiscarded TaskState = "discarded"
)

// AllStates lists every task state in pipeline order.
var AllStates = []TaskState{
	StateQueued, StatePreparing, StateRunning, StateDiffing, StateReview,
	StateApplying, StateApplied, StateClosed, StateConflict, StateFailed,
	StateCanceled, StateDiscarded,
}

// Mover says who makes a task transition.
type Mover int

// Movers.
const (
	// ByStage: a stage job, on its own (or ending because of a cancel).
	ByStage Mover = iota
	// ByPerson: a person or script asked (apply, discard, cancel, retry).
	ByPerson
	// ByClose: the close job, once the worktree is gone.
	ByClose
)

// taskMoves is the task state machine: every allowed transition, and who
// makes it. store's SetState refuses any other; Settled, Finished and
// Closable derive from it.
var taskMoves = map[TaskState]map[TaskState]Mover{
	StateQueued: {StatePreparing: ByStage, StateFailed: ByStage, StateCanceled: ByPerson},
	// preparing -> preparing: a session's task waiting for its turn.
	StatePreparing: {StatePreparing: ByStage, StateRunning: ByStage, StateDiffing: ByStage,
		StateFailed: ByStage, StateCanceled: ByStage},
	StateRunning: {StateDiffing: ByStage, StateFailed: ByStage, StateCanceled: ByStage},
	StateDiffing: {StateReview: ByStage, StateFailed: ByStage},
	// review and conflict -> closed: closed without an outcome (grove close).
	StateReview:   {StateApplying: ByPerson, StateDiscarded: ByPerson, StateClosed: ByClose},
	StateApplying: {StateApplied: ByStage, StateConflict: ByStage, StateReview: ByStage, StateFailed: ByStage},
	StateConflict: {StateDiscarded: ByPerson, StateClosed: ByClose},
	// The outcomes are the end: removing the worktree afterwards leaves
	// the task applied or discarded (its workspace says removed).
	StateApplied:   {},
	StateDiscarded: {},
	StateFailed:    {StateQueued: ByPerson}, // retry
	StateCanceled:  {StateQueued: ByPerson}, // retry
	StateClosed:    {},                      // closed without applying or discarding
}

// Valid reports whether s is a known state.
func (s TaskState) Valid() bool { return slices.Contains(AllStates, s) }

// CanMove reports whether a task may go from state s to state to.
func (s TaskState) CanMove(to TaskState) bool {
	_, ok := taskMoves[s][to]
	return ok
}

// Moves returns the states a task in s may go to, in pipeline order.
func (s TaskState) Moves() []TaskState {
	var out []TaskState
	for _, t := range AllStates {
		if s.CanMove(t) {
			out = append(out, t)
		}
	}
	return out
}

// MoveBy returns who makes the transition s -> to (ok false if none may).
func (s TaskState) MoveBy(to TaskState) (Mover, bool) {
	m, ok := taskMoves[s][to]
	return m, ok
}

// Settled reports whether a task in state s is waiting on a person or done:
// no stage moves it on by itself. `grove wait` returns once a task is
// settled.
func (s TaskState) Settled() bool {
	for _, m := range taskMoves[s] {
		if m == ByStage {
			return false
		}
	}
	return s.Valid()
}

// Finished reports whether no further stage will run on its own for a task
// in state s; its worktree may be closed. It is Settled.
func (s TaskState) Finished() bool { return s.Settled() }

// Terminal reports whether no transition leaves s.
func (s TaskState) Terminal() bool { return s.Valid() && len(taskMoves[s]) == 0 }

// ClosableStates are the states a close may start from: the settled
// ones. A review or conflict task becomes closed; the others (applied,
// discarded, failed, canceled, closed) keep their state, and their
// workspace says removed.
func ClosableStates() []TaskState { return filterStates(TaskState.Settled) }

// StageStates are the states a stage can still move a task out of: the
// unsettled ones.
func StageStates() []TaskState {
	return filterStates(func(s TaskState) bool { return !s.Settled() })
}

func filterStates(keep func(TaskState) bool) []TaskState {
	var out []TaskState
	for _, s := range AllStates {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// TransitionError is a task state change the state machine does not allow.
type TransitionError struct {
	TaskID   string
	From, To TaskState
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("task %s: no transition from %s to %s (allowed: %v)", e.TaskID, e.From, e.To, e.From.Moves())
}

// Is makes errors.Is(err, ErrConflict) true for a refused transition.
func (e *TransitionError) Is(target error) bool { return target == ErrConflict }

// WorkspaceState is where a workspace (a worktree grove made) is in its
// life. It is an alias of string for now, so the Workspace.State field and
// its callers keep compiling; CanMoveWorkspace is its transition table.
type WorkspaceState = string

// Workspace states.
const (
	WorkspaceCreating = "creating"
	WorkspaceReady    = "ready"
	WorkspaceRemoved  = "removed"
	// WorkspaceRemoving: a remover (jobs.Remove) has claimed it, before
	// the gate runs; nothing else may use it (a retry waits, the reaper and
	// pool claims skip it) until the removal ends or releases the claim.
	WorkspaceRemoving = "removing"
	// Warm pool: a checked-out worktree at the default branch's tip that
	// no task owns yet; pool_creating while it is made, pool_moving while
	// a pool pass checks or moves it (no task may take it then), claiming
	// while a task takes it over, stale when it was found dirty (never
	// reused).
	WorkspacePool         = "pool"
	WorkspacePoolCreating = "pool_creating"
	WorkspacePoolMoving   = "pool_moving"
	WorkspaceClaiming     = "claiming"
	WorkspaceStale        = "stale"
	// WorkspaceOrphan: a worktree the reaper found under the home that no
	// row owned and kept because it is at risk; recorded so that
	// `grove ls --at-risk` shows it.
	WorkspaceOrphan = "orphan"
)

// AllWorkspaceStates lists every workspace state.
var AllWorkspaceStates = []WorkspaceState{
	WorkspaceCreating, WorkspaceReady, WorkspaceRemoving, WorkspaceRemoved,
	WorkspacePoolCreating, WorkspacePool, WorkspacePoolMoving, WorkspaceClaiming, WorkspaceStale,
	WorkspaceOrphan,
}

// workspaceMoves is the workspace state machine. Every state may also go
// to itself (a stage repeated after a crash records the same state).
var workspaceMoves = map[WorkspaceState][]WorkspaceState{
	WorkspaceCreating: {WorkspaceReady, WorkspaceRemoving, WorkspaceRemoved},
	WorkspaceReady:    {WorkspaceRemoving, WorkspaceRemoved, WorkspaceStale},
	// removing -> the state it had: the removal was refused (work found)
	// or failed, and released its claim.
	WorkspaceRemoving: {WorkspaceReady, WorkspaceStale, WorkspaceRemoved, WorkspaceOrphan, WorkspacePool,
		WorkspacePoolMoving, WorkspacePoolCreating, WorkspaceCreating},
	WorkspacePoolCreating: {WorkspacePoolMoving, WorkspacePool, WorkspaceStale, WorkspaceRemoving, WorkspaceRemoved},
	WorkspacePool:         {WorkspacePoolMoving, WorkspaceClaiming, WorkspaceStale, WorkspaceRemoving, WorkspaceRemoved},
	WorkspacePoolMoving:   {WorkspacePool, WorkspaceStale, WorkspaceRemoving, WorkspaceRemoved},
	WorkspaceClaiming:     {WorkspaceReady, WorkspacePool, WorkspaceStale},
	WorkspaceStale:        {WorkspaceRemoving, WorkspaceRemoved},
	WorkspaceOrphan:       {WorkspaceRemoving, WorkspaceRemoved},
	WorkspaceRemoved:      {},
}

// CanMoveWorkspace reports whether a workspace may go from state from to
// state to. The store's workspace updates check it.
func CanMoveWorkspace(from, to WorkspaceState) bool {
	if from == to {
		_, known := workspaceMoves[from]
		return known
	}
	return slices.Contains(workspaceMoves[from], to)
}
