package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// Intents record what a person or script asked for and enqueue the job that
// does it, in one transaction. They work whether or not a daemon runs: the
// daemon picks the job up when it does.
type Intents struct {
	Store  *store.Store
	Client *Client // an insert-only client is enough
	Home   string
	// wake, in the daemon, wakes its queue after a commit (outside it, the
	// CLI pokes the daemon's wake socket instead).
	wake func()
}

// SubmitRequest is what `grove submit` asks for.
type SubmitRequest struct {
	RepoDir string            // any path inside a work tree
	Base    string            // "" = the main checkout's current branch
	Argv    []string          // the agent's command
	Env     map[string]string // added to the agent's environment
	Path    string            // the submitter's PATH
	Timeout time.Duration     // 0 = none
	Apply   grove.ApplyPolicy // "" = manual
	Key     string            // idempotency key; "" = none
	Session string            // session key; "" = own worktree
	Options grove.TaskOptions // per-task settings, kept with the task
	// Host is the host whose repository the task runs on ("" this one);
	// another host's repository is named by its absolute path there
	// (PostgreSQL, see submitRemote).
	Host string
	// ID is the task's id chosen by the submitter ("" = a new one; an id
	// already recorded fails, as a clash of new ids would).
	ID string
	// Resubmit says the same request (same ID) may have been recorded
	// already, by a daemon whose answer was lost (SubmitViaDaemon): if a
	// task of that id exists with the same command, environment, apply
	// policy, key, timeout and PATH, it is returned, created false; with
	// anything else it is an error.
	Resubmit bool
}

// Submit validates req, records the task and enqueues create_worktree. With
// a Key already used, it returns that task and created=false, doing nothing.
// Bad input returns a *grove.UserError and records nothing.
func (i *Intents) Submit(ctx context.Context, req SubmitRequest) (task grove.Task, created bool, err error) {
	if len(req.Argv) == 0 {
		return task, false, grove.Userf(grove.ErrUsage, "put the agent's command after --, e.g. grove submit -- my-agent --prompt hi", "no command to run")
	}
	if req.Apply == "" {
		req.Apply = grove.ApplyManual
	}
	if req.Apply != grove.ApplyManual && req.Apply != grove.ApplyAuto {
		return task, false, grove.Userf(grove.ErrUsage, "use --apply manual or --apply auto", "unknown apply policy %q", req.Apply)
	}
	if req.Timeout < 0 {
		return task, false, grove.Userf(grove.ErrUsage, "give a positive duration, e.g. --timeout 30m", "negative timeout %s", req.Timeout)
	}
	if req.ID != "" && !grove.ValidTaskID(req.ID) {
		return task, false, fmt.Errorf("submit: malformed task id %q", req.ID)
	}
	if req.Session != "" {
		if req.Host != "" && req.Host != i.Store.Host() {
			return task, false, grove.Userf(grove.ErrUsage, "submit session tasks on the session's host", "--host with --session is not supported")
		}
		return i.submitToSession(ctx, req)
	}
	if req.Host != "" && req.Host != i.Store.Host() {
		return i.submitRemote(ctx, req)
	}
	repo, head, err := gitops.OpenAtHead(ctx, req.RepoDir)
	if err != nil {
		return task, false, err
	}
	base, commit, target, err := resolveBase(ctx, repo, head, req.Base)
	if err != nil {
		return task, false, err
	}
	task = grove.Task{ID: cmp.Or(req.ID, grove.NewTaskID()), RepoPath: repo.Root, BaseRef: base, BaseCommit: commit,
		TargetBranch: target, Argv: req.Argv, Env: req.Env, Path: req.Path, Timeout: req.Timeout, Options: req.Options,
		Apply: req.Apply, IdemKey: req.Key, SessionID: req.Session, State: grove.StateQueued}
	err = i.Store.InTx(ctx, func(tx *store.Tx) error {
		if old, ok, err := recorded(ctx, tx, req); ok || err != nil {
			task = old
			return err
		}
		task.RepoID, err = tx.UpsertRepo(ctx, grove.Repo{Path: repo.Root, CommonDir: repo.CommonDir, DefaultBranch: target})
		if err != nil {
			return err
		}
		task, created, err = tx.InsertTask(ctx, task)
		if err != nil || !created {
			return err
		}
		if err := tx.AddEvent(ctx, task.ID, "", "submitted", fmt.Sprintf("base %s (%.12s), target %s", base, commit, target)); err != nil {
			return err
		}
		err = i.enqueue(ctx, tx, CreateWorktreeArgs{TaskID: task.ID, Attempt: 1})
		return err
	})
	return task, created, err
}

// submitToSession records a task that runs in a session's worktree: the
// session fixes the repository, base and target.
func (i *Intents) submitToSession(ctx context.Context, req SubmitRequest) (task grove.Task, created bool, err error) {
	task = grove.Task{ID: cmp.Or(req.ID, grove.NewTaskID()), Argv: req.Argv, Env: req.Env, Path: req.Path, Timeout: req.Timeout,
		Options: req.Options, Apply: req.Apply, IdemKey: req.Key, SessionID: req.Session, State: grove.StateQueued}
	err = i.Store.InTx(ctx, func(tx *store.Tx) error {
		if old, ok, err := recorded(ctx, tx, req); ok || err != nil {
			task = old
			return err
		}
		sess, err := tx.Session(ctx, req.Session)
		if err != nil {
			return err
		}
		if sess.State == grove.SessionClosed {
			return grove.Userf(grove.ErrConflict, "start it again with: grove session start "+sess.ID+" --repo DIR", "session %s is closed", sess.ID)
		}
		task.RepoID, task.RepoPath = sess.RepoID, sess.RepoPath
		task.BaseRef, task.BaseCommit, task.TargetBranch = "session "+sess.ID, sess.BaseCommit, sess.TargetBranch
		task, created, err = tx.InsertTask(ctx, task)
		if err != nil || !created {
			return err
		}
		if err := tx.TouchSession(ctx, sess.ID); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, task.ID, sess.ID, "submitted", "in session "+sess.ID); err != nil {
			return err
		}
		err = i.enqueue(ctx, tx, CreateWorktreeArgs{TaskID: task.ID, Attempt: 1})
		return err
	})
	return task, created, err
}

// recorded returns the task id names when it is already recorded: a
// submit that chose its id and is made again (its first try's answer was
// lost). id "" is never recorded.
// Only a Resubmit looks; a task of that id that differs from req is
// another submit's: an error.
func recorded(ctx context.Context, tx *store.Tx, req SubmitRequest) (grove.Task, bool, error) {
	if req.ID == "" || !req.Resubmit {
		return grove.Task{}, false, nil
	}
	task, err := tx.Task(ctx, req.ID)
	switch {
	case errors.Is(err, grove.ErrNotFound):
		return grove.Task{}, false, nil
	case err != nil:
		return task, false, err
	case !slices.Equal(task.Argv, req.Argv) || !maps.Equal(task.Env, req.Env) || task.Apply != req.Apply ||
		task.IdemKey != req.Key || task.Timeout.Milliseconds() != req.Timeout.Milliseconds() || task.Path != req.Path:
		return task, false, fmt.Errorf("submit: task id %s is already another task's", req.ID)
	}
	return task, true, nil
}

// SessionRequest is what `grove session start` asks for.
type SessionRequest struct {
	Key     string
	RepoDir string
	Base    string   // "" = the main checkout's branch
	Serve   []string // the service's argv; empty = none
	// Restart is the service's restart policy (grove.Restart*; "" = no),
	// MaxRestarts the restarts allowed in a row (0 = 5).
	Restart     string
	MaxRestarts int
}

// StartSession records a session and enqueues the creation of its
// worktree (and service). A bad key or repository records nothing.
func (i *Intents) StartSession(ctx context.Context, req SessionRequest) error {
	if err := validSessionKey(ctx, req.Key); err != nil {
		return err
	}
	if req.Restart == "" {
		req.Restart = grove.RestartNo
	}
	if !grove.ValidRestart(req.Restart) || req.MaxRestarts < 0 {
		return grove.Userf(grove.ErrUsage, "use --restart no, on-failure or always, and --max-restarts N >= 0", "bad restart policy %q (max %d)", req.Restart, req.MaxRestarts)
	}
	if req.MaxRestarts == 0 {
		req.MaxRestarts = 5
	}
	repo, head, err := gitops.OpenAtHead(ctx, req.RepoDir)
	if err != nil {
		return err
	}
	base, commit, target, err := resolveBase(ctx, repo, head, req.Base)
	if err != nil {
		return err
	}
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		repoID, err := tx.UpsertRepo(ctx, grove.Repo{Path: repo.Root, CommonDir: repo.CommonDir, DefaultBranch: target})
		if err != nil {
			return err
		}
		sess := grove.Session{ID: req.Key, RepoID: repoID, State: grove.SessionStarting, BaseCommit: commit,
			TargetBranch: target, Serve: req.Serve, Restart: req.Restart, MaxRestarts: req.MaxRestarts}
		if err := tx.InsertSession(ctx, sess); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, "", req.Key, "session_asked", fmt.Sprintf("base %s (%.12s), target %s", base, commit, target)); err != nil {
			return err
		}
		err = i.enqueue(ctx, tx, SessionArgs{Key: req.Key, Op: SessionStart})
		return err
	})
}

// SessionOp enqueues stop, resume or close of a session.
func (i *Intents) SessionOp(ctx context.Context, key, op string, force bool) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		sess, err := tx.Session(ctx, key)
		if err != nil {
			return err
		}
		if sess.State == grove.SessionClosed {
			return grove.Userf(grove.ErrConflict, "list sessions with: grove session ls", "session %s is closed", key)
		}
		if err := tx.AddEvent(ctx, "", key, "session_"+op+"_asked", ""); err != nil {
			return err
		}
		err = i.enqueue(ctx, tx, SessionArgs{Key: key, Op: op, Force: force})
		return err
	})
}

// validSessionKey accepts keys that make a safe directory and branch name.
func validSessionKey(ctx context.Context, key string) error {
	ok := key != "" && len(key) <= 64 && key[0] != '-' && key[0] != '.'
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			ok = false
		}
	}
	if !ok {
		return grove.Userf(grove.ErrUsage, "use letters, digits, '-', '_' and '.', at most 64, e.g. chat-42", "invalid session key %q", key)
	}
	return gitops.CheckBranchName(ctx, SessionBranch(key))
}

// resolveBase resolves a --base (default: the main checkout's branch, or
// HEAD when detached) to a commit, and picks the target branch: the base
// itself when it is a local branch, else the main checkout's branch, else
// the repository's default branch.
//
// head is the main worktree's HEAD if the caller read it already (see
// gitops.OpenAtHead).
func resolveBase(ctx context.Context, repo *gitops.Repo, head gitops.MainHead, base string) (name, commit, target string, err error) {
	if base == "" && head.Known && head.Branch != "" { // the common case: no git call
		return head.Branch, head.Commit, head.Branch, nil
	}
	if base == "" { // in one git call
		if branch, commit, err := repo.Head(ctx); err == nil && branch != "" {
			return branch, commit, branch, nil
		}
	}
	current, err := repo.CurrentBranch(ctx)
	if err != nil {
		return "", "", "", err
	}
	name = cmp.Or(base, current, "HEAD")
	if commit, err = repo.ResolveCommit(ctx, name); err != nil {
		return "", "", "", err
	}
	isBranch, err := repo.IsLocalBranch(ctx, name)
	switch {
	case err != nil:
		return "", "", "", err
	case isBranch:
		target = name
	case current != "":
		target = current
	default:
		target, err = repo.DefaultBranch(ctx)
	}
	return name, commit, target, err
}

// Apply asks for a task in review to be applied.
func (i *Intents) Apply(ctx context.Context, id string) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if task.State != grove.StateReview {
			return stateError(task, "apply", grove.StateReview)
		}
		if err := tx.AddEvent(ctx, id, "", "apply_asked", ""); err != nil {
			return err
		}
		return enqueueApply(ctx, tx, id, func(a river.JobArgs) error { return i.enqueue(ctx, tx, a) })
	})
}

// Discard drops a task's change (it stays at refs/grove/tasks/<id>) and
// enqueues its close.
func (i *Intents) Discard(ctx context.Context, id string) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		ok, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateReview, grove.StateConflict}, grove.StateDiscarded, "")
		if err != nil {
			return err
		}
		if !ok {
			return stateError(task, "discard", grove.StateReview, grove.StateConflict)
		}
		if err := tx.AddEvent(ctx, id, "", "discarded", "change kept at "+TaskRef(id)); err != nil {
			return err
		}
		err = i.enqueue(ctx, tx, CloseArgs{TaskID: id})
		return err
	})
}

// Cancel stops a task that has not settled: a queued one at once, a running
// one by signalling its supervisor (TERM to the agent's group, grace, KILL).
// The daemon also forwards a recorded cancel, so it works from any process.
func (i *Intents) Cancel(ctx context.Context, id string, runDir string) error {
	var task grove.Task
	err := i.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		task, err = tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if !in(task.State, grove.StateQueued, grove.StatePreparing, grove.StateRunning) {
			return stateError(task, "cancel", grove.StateQueued, grove.StatePreparing, grove.StateRunning)
		}
		if err := tx.AskCancel(ctx, id); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "cancel_asked", ""); err != nil {
			return err
		}
		if task.State == grove.StateQueued {
			if _, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateQueued}, grove.StateCanceled, "canceled"); err != nil {
				return err
			}
			err = i.enqueue(ctx, tx, CloseArgs{TaskID: id})
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Another host's agent is not here to signal: its daemon forwards the
	// recorded cancel (PostgreSQL).
	if task.State == grove.StateRunning && (!i.Store.Postgres() || task.Host == i.Store.Host()) {
		if err := SignalRun(runDir, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("signal agent of task %s: %w", id, err)
		}
	}
	return nil
}

// Close asks for a finished task's worktree to be removed (through the gate;
// force snapshots first, with dropIgnored leaving ignored files out of the
// snapshot).
func (i *Intents) Close(ctx context.Context, id string, force, dropIgnored bool) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if !in(task.State, closable...) {
			return stateError(task, "close", closable...)
		}
		if err := tx.AddEvent(ctx, id, "", "close_asked", fmt.Sprintf("force=%v", force)); err != nil {
			return err
		}
		err = i.enqueue(ctx, tx, CloseArgs{TaskID: id, Force: force, DropIgnored: dropIgnored})
		return err
	})
}

// Retry runs a failed or canceled task again as a new attempt. It refuses
// while a process of the task's last attempt still lives (its supervisor,
// its agent's group, anything carrying its GROVE_TASK_ID): an agent never
// runs twice at once.
func (i *Intents) Retry(ctx context.Context, id string) error {
	if task, err := i.Store.Task(ctx, id); err == nil && in(task.State, grove.StateFailed, grove.StateCanceled) {
		pids, err := RunSurvivors(ctx, i.Store, i.Home, task, task.Attempt, false)
		if err != nil {
			return fmt.Errorf("retry task %s: look for processes of attempt %d: %w", id, task.Attempt, err)
		}
		if len(pids) > 0 {
			return grove.Userf(grove.ErrConflict, fmt.Sprintf("wait for them to end, or stop them (kill %s), then: grove retry %s", pidList(pids), id),
				"task %s: processes of attempt %d are still running (pids %s)", id, task.Attempt, pidList(pids))
		}
	}
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if !in(task.State, grove.StateFailed, grove.StateCanceled) {
			return stateError(task, "retry", grove.StateFailed, grove.StateCanceled)
		}
		if ws, err := tx.TaskWorkspace(ctx, id); err == nil && ws.State == grove.WorkspaceRemoving {
			return grove.Userf(grove.ErrConflict, "try again in a moment: grove retry "+id,
				"task %s: its worktree is being removed", id)
		}
		if err := tx.Retry(ctx, id); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "retry", fmt.Sprintf("attempt %d", task.Attempt+1)); err != nil {
			return err
		}
		err = i.enqueue(ctx, tx, CreateWorktreeArgs{TaskID: id, Attempt: task.Attempt + 1})
		return err
	})
}

func stateError(task grove.Task, verb string, want ...grove.TaskState) error {
	hint := "see its state with: grove show " + task.ID
	switch {
	case verb == "apply" && task.State == grove.StateRunning:
		hint = "wait for it first: grove wait " + task.ID
	case verb == "cancel" && task.State == grove.StateReview:
		hint = "to drop its change: grove discard " + task.ID
	}
	return grove.Userf(grove.ErrConflict, hint, "cannot %s task %s: it is %s (needs %v)", verb, task.ID, task.State, want)
}

// pidList formats pids as "12 34".
func pidList(pids []int) string {
	s := make([]string, len(pids))
	for k, p := range pids {
		s[k] = strconv.Itoa(p)
	}
	return strings.Join(s, " ")
}
