package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/treewatch"
	"github.com/grove-dev/grove/store"
)

// Client is the River client type grove uses (SQLite via database/sql).
type Client = river.Client[*sql.Tx]

type sqlTx = sql.Tx

// Queue names.
const (
	QueueGit         = "git"         // short git work
	QueueAgent       = "agent"       // long agent runs, bounded by --max-agents
	QueueMaintenance = "maintenance" // periodic jobs, one at a time
	// QueueCleanup closes tasks (gate, removal): it has its own workers so
	// that removing finished worktrees never delays starting new ones.
	QueueCleanup = "cleanup"
)

// stageAttempts is how often a stage job runs before its task is failed.
const stageAttempts = 3

// Deps are what every worker needs. Build one with NewDeps.
type Deps struct {
	Store  *store.Store
	Home   string       // $GROVE_HOME
	Exe    string       // the grove binary, for `grove supervise`
	Logger *slog.Logger // never nil
	// Grace is the TERM-to-KILL wait for agents (default 3s).
	Grace time.Duration
	// Poll is how often a waiting worker looks at a run (default 50ms).
	Poll time.Duration
	// Now is the clock of TTL decisions (tests inject one).
	Now func() time.Time
	// IdleTTL: a live session idle this long has its service stopped.
	IdleTTL time.Duration
	// MaxLive caps live sessions; the least recently used idle ones are
	// evicted beyond it (0: no cap).
	MaxLive int
	// PortLo and PortHi bound the ports leased to session services.
	PortLo, PortHi int
	// PortLease is how long a session whose service is down keeps its
	// port (0: an hour); ReadyTimeout how long a service has to listen on
	// its port (0: 30s). See session_start.go.
	PortLease, ReadyTimeout time.Duration
	// Warm is how many checked-out worktrees the pool keeps ready per
	// repository at its default branch's tip (0: no pool).
	Warm int
	// TrashKeep is how long a removed worktree stays in the trash (0:
	// DefaultTrashKeep); TrashMax the bytes the trash may hold (0:
	// DefaultTrashMax; negative: no budget). See PurgeTrash.
	TrashKeep time.Duration
	TrashMax  int64
	// KeepRefs is how long a finished task's refs/grove/tasks/<id> is
	// kept (0: forever). See PruneTaskRefs.
	KeepRefs time.Duration
	// Sandbox is how agents are confined (see sandbox.go).
	Sandbox SandboxConfig

	mu       sync.Mutex
	repos    map[string]*gitops.Repo
	fills    map[int64]*fillState // pool passes, one at a time per repo
	watch    *treewatch.Watcher   // see pool_trust.go; opened on first use
	watchErr error
	trusted  map[int64]*trust // pool entries verified clean, by workspace id
	settings sync.Map         // settings per repository and commit, see setup.go
	stopping chan struct{}
	wake     func()    // wakes the daemon's River listener (nil outside the daemon)
	standby  *standbys // supervisors started ahead (standby.go); nil: none
	// Agent slots (early_start.go): --max-agents (0 outside the daemon),
	// the slots held, and the early starts under way by task id.
	maxAgents, agentSlots int
	early                 map[string]*earlyStart
	stopOnce              sync.Once
}

// Shutdown tells waiting agent workers to let go of their runs (which keep
// running, for the next daemon to adopt) so the daemon can stop quickly.
func (d *Deps) Shutdown() { d.stopOnce.Do(func() { close(d.stopping) }) }

// untilShutdown returns a context that also ends at Shutdown.
func (d *Deps) untilShutdown(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-d.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// NewDeps fills defaults: the running executable, a discard logger.
func NewDeps(st *store.Store, home string, logger *slog.Logger) (*Deps, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find grove executable: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// A daemon's maintenance walks only its host's worktrees (PostgreSQL).
	return &Deps{Store: st.HostScoped(), Home: home, Exe: exe, Logger: logger, Grace: 3 * time.Second,
		Poll: 50 * time.Millisecond, Now: time.Now, IdleTTL: 30 * time.Minute, MaxLive: 8,
		PortLo: 20000, PortHi: 20999, repos: map[string]*gitops.Repo{}, trusted: map[int64]*trust{}, stopping: make(chan struct{})}, nil
}

// Repo opens (and caches) the git repository at path.
func (d *Deps) Repo(ctx context.Context, path string) (*gitops.Repo, error) {
	d.mu.Lock()
	r := d.repos[path]
	d.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := gitops.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.repos[path] = r
	d.mu.Unlock()
	return r, nil
}

// WorktreePath is where a task's worktree lives.
func (d *Deps) WorktreePath(repo grove.Repo, taskID string) string {
	return filepath.Join(d.Home, "worktrees", filepath.Base(repo.Path)+"-"+strconv.FormatInt(repo.ID, 10), taskID)
}

// TrashDir is where removed worktrees are moved before their files are
// deleted (see gitops.RetireWorktree); in the home, like the worktrees, so
// moving one there is a rename.
func (d *Deps) TrashDir() string { return filepath.Join(d.Home, "trash") }

// RunDir is the supervisor directory of a task's attempt.
func (d *Deps) RunDir(taskID string, attempt int) string { return RunDir(d.Home, taskID, attempt) }

// RunDir is the supervisor directory of a task's attempt under home.
func RunDir(home, taskID string, attempt int) string {
	return filepath.Join(home, "runs", fmt.Sprintf("%s-%d", taskID, attempt))
}

// TaskBranch is the branch a task's worktree is on.
// Each task's branch sits in a directory of its own (grove/<id>/work), so
// that the sandbox can let the agent update it without letting it touch
// any other ref; tasks submitted before used grove/<id> (see
// migrateBranch).
func TaskBranch(taskID string) string { return "grove/" + taskID + "/work" }

// TaskRef keeps a task's final commit reachable after its branch is gone.
func TaskRef(taskID string) string { return "refs/grove/tasks/" + taskID }

// SnapshotRef is where a forced removal snapshots a task's worktree.
func SnapshotRef(taskID string) string { return "refs/grove/snapshots/" + taskID }

// NewInsertClient returns a River client that only inserts jobs (the CLI's).
func NewInsertClient(st *store.Store) (*Client, error) {
	c, err := river.NewClient(st.RiverDriver(), &river.Config{ID: clientID("cli", st.Host()), Middleware: middleware(st)})
	if err != nil {
		return nil, fmt.Errorf("river insert client: %w", err)
	}
	return c, nil
}

// clientID is a River client id unique across processes and hosts; it
// begins with store.ClientIDPrefix(role, host) (RescueRunningJobs relies
// on it).
func clientID(role, host string) string {
	return fmt.Sprintf("%s%d-%d", store.ClientIDPrefix(role, host), os.Getpid(), time.Now().UnixNano()%1e6)
}

// ServeConfig sizes the daemon's River client.
type ServeConfig struct {
	MaxAgents   int
	GitWorkers  int
	Periodic    []*river.PeriodicJob
	ExtraWork   func(*river.Workers) // registers more workers (periodic kinds)
	JobTimeout  time.Duration
	ErrorLogger *slog.Logger
}

// NewServeClient returns the daemon's River client with every stage worker
// registered and the git, agent and maintenance queues configured.
func NewServeClient(d *Deps, cfg ServeConfig) (*Client, error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, &CreateWorktreeWorker{d: d})
	river.AddWorker(workers, &SetupWorker{d: d})
	river.AddWorker(workers, &RunAgentWorker{d: d})
	river.AddWorker(workers, &DiffWorker{d: d})
	river.AddWorker(workers, &ApplyWorker{d: d})
	river.AddWorker(workers, &CloseWorker{d: d})
	river.AddWorker(workers, &SessionWorker{d: d})
	river.AddWorker(workers, &EvictIdleWorker{d: d})
	river.AddWorker(workers, &LRUCapWorker{d: d})
	river.AddWorker(workers, &PoolFillWorker{d: d})
	if cfg.ExtraWork != nil {
		cfg.ExtraWork(workers)
	}
	if cfg.MaxAgents <= 0 {
		cfg.MaxAgents = 4
	}
	d.mu.Lock()
	d.maxAgents = cfg.MaxAgents
	d.mu.Unlock()
	if cfg.GitWorkers <= 0 {
		cfg.GitWorkers = 4
	}
	driver := newWakeDriver(d.Store)
	d.wake = driver.Wake
	c, err := river.NewClient(driver.driver(), &river.Config{
		ID:           clientID("serve", d.Store.Host()),
		Logger:       cfg.ErrorLogger,
		Queues:       serveQueues(d.Store, cfg),
		Middleware:   middleware(d.Store),
		Workers:      workers,
		PeriodicJobs: riverPeriodic(d.Store, cfg.Periodic),
		// Inserts reach the queues through the (woken) listener, see
		// wake.go, and a finished job frees a slot with a fetch of its
		// own; the fetch poll is only a fallback, kept slow because each
		// poll of each of the four queues is a write transaction whose
		// large statement SQLite parses again (at 200 ms it was a third of
		// the daemon's CPU under grove-bench; at 25 ms an idle daemon used
		// 13% of a core). The cooldown also spaces River's insert
		// notifications per queue: at 1 ms, two inserts must land within a
		// millisecond for the second to wait for the poll.
		FetchCooldown:     time.Millisecond,
		FetchPollInterval: time.Second,
		JobTimeout:        15 * time.Minute,
		// Jobs left running by a dead daemon are taken back at startup
		// (store.RescueRunningJobs); this is only the fallback.
		RescueStuckJobsAfter: time.Hour,
		SoftStopTimeout:      5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return c, nil
}

// riverPeriodic are the periodic jobs River's leader runs: all of them on
// SQLite; none on PostgreSQL, where each daemon runs its own on its host
// (scheduler.RunLocal, see host.go).
func riverPeriodic(st *store.Store, pjs []*river.PeriodicJob) []*river.PeriodicJob {
	if st.Postgres() {
		return nil
	}
	return pjs
}

// serveQueues are the daemon's queues: git, agent, cleanup and
// maintenance; on PostgreSQL the first three are this host's (HostQueue).
func serveQueues(st *store.Store, cfg ServeConfig) map[string]river.QueueConfig {
	q := map[string]river.QueueConfig{
		QueueGit:         {MaxWorkers: cfg.GitWorkers},
		QueueAgent:       {MaxWorkers: cfg.MaxAgents},
		QueueMaintenance: {MaxWorkers: 1},
		QueueCleanup:     {MaxWorkers: 2},
	}
	if st.Postgres() {
		for name, c := range q {
			if hostBound[name] {
				delete(q, name)
				q[HostQueue(name, st.Host())] = c
			}
		}
	}
	return q
}

// Priorities on the git queue (1 is worked first): finishing a task whose
// agent is done comes before starting another (under a backlog of
// submits, a diff no longer waits behind every create: with 1000 queued,
// none reached review for 3 minutes); pool refills can wait.
const (
	priorityStage = 1 // diff, apply
	priorityStart = 2 // create_worktree, session ops
	priorityPool  = 3 // pool_fill
)

// gitOpts is the insert policy of short git stages.
func gitOpts(priority int) river.InsertOpts {
	return river.InsertOpts{Queue: QueueGit, MaxAttempts: stageAttempts, Priority: priority}
}

// fail ends task id in state failed (from any of `from`, or any unfinished
// state) with msg, and enqueues a close that removes the worktree if the
// at-risk gate allows.
func (d *Deps) fail(ctx context.Context, client *Client, id string, msg string) error {
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		ok, err := tx.SetState(ctx, id, unfinished, grove.StateFailed, msg)
		if err != nil || !ok {
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "failed", msg); err != nil {
			return err
		}
		err = d.enqueue(ctx, client, tx, CloseArgs{TaskID: id})
		return err
	})
}

// unfinished are the states a stage can still move a task out of.
var unfinished = grove.StageStates()

// stageError decides what a stage does with err: a user error, or a
// transient one on the last attempt, fails the task and cancels the job; an
// earlier transient one is returned so River retries it.
func (d *Deps) stageError(ctx context.Context, client *Client, id string, attempt, maxAttempts int, what string, err error) error {
	if !giveUp(err, attempt, maxAttempts) {
		d.Logger.Warn("stage failed, will retry", "task", id, "stage", what, "attempt", attempt, "err", err)
		return err
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	if ferr := d.fail(ctx, client, id, msg); ferr != nil {
		return fmt.Errorf("%s; record failure: %w", msg, ferr)
	}
	return river.JobCancel(errors.New(msg))
}

// stageTask loads the task a stage job works on. ok is false (with a nil
// error) when the task is in none of states: the stage already ran, or the
// task was canceled. A task that does not exist cancels the job.
func (d *Deps) stageTask(ctx context.Context, id string, states ...grove.TaskState) (grove.Task, bool, error) {
	task, err := d.Store.Task(ctx, id)
	if errors.Is(err, grove.ErrNotFound) {
		return task, false, river.JobCancel(err)
	}
	if err != nil {
		return task, false, err
	}
	return task, in(task.State, states...), nil
}

// giveUp reports whether a stage should stop retrying: a user error is
// final, a transient one is retried until the last attempt.
func giveUp(err error, attempt, maxAttempts int) bool {
	var ue *grove.UserError
	return errors.As(err, &ue) || attempt >= maxAttempts
}

func in(s grove.TaskState, states ...grove.TaskState) bool { return slices.Contains(states, s) }
