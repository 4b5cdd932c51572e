package grove

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"time"
)

// Schema is grove's own schema (River's tables come from rivermigrate).
//
//go:embed schema.sql
var Schema string

// SchemaVersion is the version of Schema. A database whose recorded version
// is higher was written by a newer grove and is refused.
const SchemaVersion = 7

// ApplyPolicy says whether a task's diff is applied without a person.
type ApplyPolicy string

// Apply policies.
const (
	ApplyManual ApplyPolicy = "manual" // stop at review
	ApplyAuto   ApplyPolicy = "auto"   // apply after the agent exits 0
)

// Task is one unit of work a script submitted.
type Task struct {
	ID           string            `json:"id"`
	RepoID       int64             `json:"repo_id"`
	RepoPath     string            `json:"repo"`
	Host         string            `json:"host,omitempty"` // its repository's host (PostgreSQL: several hosts)
	BaseRef      string            `json:"base_ref"`
	BaseCommit   string            `json:"base_commit"`
	TargetBranch string            `json:"target_branch"`
	Argv         []string          `json:"argv"`
	Env          map[string]string `json:"env,omitempty"`
	Path         string            `json:"-"` // submitter's PATH, used to find the agent
	Timeout      time.Duration     `json:"timeout_ns"`
	Apply        ApplyPolicy       `json:"apply"`
	SessionID    string            `json:"session,omitempty"`
	IdemKey      string            `json:"key,omitempty"`
	State        TaskState         `json:"state"`
	Error        string            `json:"error,omitempty"`
	ExitCode     *int              `json:"exit_code,omitempty"`
	Attempt      int               `json:"attempt"`
	CancelAsked  bool              `json:"cancel_requested,omitempty"`
	// Options are the task's settings beyond the pipeline's own fields,
	// stored as one JSON object (a new option needs no schema change).
	Options   TaskOptions `json:"options"`
	CreatedAt time.Time   `json:"created_at"`
	UpdatedAt time.Time   `json:"updated_at"`
}

// WaitOver reports whether `grove wait` is over for t: settled (see
// TaskState.Settled), and not a successful task in review that its auto
// apply is about to take on.
func (t Task) WaitOver() bool {
	if t.State == StateReview && t.Apply == ApplyAuto && t.ExitCode != nil && *t.ExitCode == 0 && t.Error == "" {
		return false // the auto-apply is on its way
	}
	return t.State.Settled()
}

// TaskOptions are a task's optional settings, chosen at submit time and
// kept with the task (column task.options, JSON). The zero value is a
// task with no options. Add a field with `json:",omitempty"` so older
// rows decode unchanged.
type TaskOptions struct {
	// TTY runs the agent on a pseudo-terminal owned by its supervisor
	// (grove submit --tty; grove attach, grove send).
	TTY bool `json:"tty,omitempty"`
	// Sandbox (see the README's "Sandbox"): extra writable paths, "none"
	// to refuse TCP, the names of the submitter's variables passed on
	// beyond the allow-list, and per-task limits (0: not limited).
	AllowWrite   []string      `json:"allow_write,omitempty"`
	Net          string        `json:"net,omitempty"`
	PassEnv      []string      `json:"pass_env,omitempty"`
	MaxOpenFiles uint64        `json:"max_open_files,omitempty"`
	MaxFileSize  int64         `json:"max_file_size,omitempty"`
	MaxCPU       time.Duration `json:"max_cpu,omitempty"`
	MaxMemory    int64         `json:"max_memory,omitempty"`
	MaxProcs     int64         `json:"max_procs,omitempty"`
	// Environ is the submitter's environment as the agent gets it: the
	// allow-listed variables and the PassEnv ones, captured at submit.
	Environ map[string]string `json:"environ,omitempty"`
}

// Workspace is one worktree on disk, owned by a task or a session.
type Workspace struct {
	ID          int64     `json:"id"`
	RepoID      int64     `json:"repo_id"`
	TaskID      string    `json:"task_id,omitempty"`
	SessionID   string    `json:"session_id,omitempty"`
	Path        string    `json:"path"`
	Branch      string    `json:"branch"`
	BaseCommit  string    `json:"base_commit"`
	HeadCommit  string    `json:"head_commit,omitempty"`
	State       string    `json:"state"` // creating | ready | removed | pool...
	AtRisk      string    `json:"at_risk,omitempty"`
	SnapshotRef string    `json:"snapshot_ref,omitempty"`
	LastUsedAt  time.Time `json:"last_used_at"`

	// SetupKey is the grove.Settings.SetupKey its last completed setup
	// ran under ("": never set up, or nothing to set up).
	SetupKey string `json:"setup_key,omitempty"`
}

// Repo is a registered git repository.
type Repo struct {
	ID            int64  `json:"id"`
	Path          string `json:"path"`       // main worktree, absolute
	CommonDir     string `json:"common_dir"` // git common dir, absolute
	DefaultBranch string `json:"default_branch"`
	Host          string `json:"host,omitempty"` // the host whose disk holds it
}

// Run is one supervised process.
type Run struct {
	ID        int64      `json:"id"`
	TaskID    string     `json:"task_id"`
	Attempt   int        `json:"attempt"`
	Pid       int        `json:"pid"`
	StartTime uint64     `json:"start_time"` // /proc/<pid>/stat field 22
	BootID    string     `json:"boot_id"`
	Dir       string     `json:"dir"` // holds log, spec.json, exit
	ExitCode  *int       `json:"exit_code,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

// Change is the diff a task produced.
type Change struct {
	TaskID     string       `json:"task_id"`
	BaseCommit string       `json:"base_commit"`
	HeadCommit string       `json:"head_commit"`
	Files      []FileChange `json:"files"`
	Added      int          `json:"added"`
	Deleted    int          `json:"deleted"`
}

// FileChange is one file in a Change.
type FileChange struct {
	Status  string `json:"status"` // A, M, D, R, T (git's letters)
	Path    string `json:"path"`
	OldPath string `json:"old_path,omitempty"`
	Added   int    `json:"added"`   // -1 for binary
	Deleted int    `json:"deleted"` // -1 for binary
}

// Event is one line of the append-only audit trail.
type Event struct {
	ID        int64     `json:"id"`
	TaskID    string    `json:"task_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	At        time.Time `json:"at"`
	Kind      string    `json:"kind"`
	Message   string    `json:"message"`
}

// NewTaskID returns a fresh random task id: "t" and 8 hex digits. Random,
// not sequential, so that a new database never reuses a branch name
// (grove/<id>) that an old one left behind.
func NewTaskID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "t" + hex.EncodeToString(b[:])
}

// ValidTaskID reports whether id has the form NewTaskID gives: "t" and
// eight lowercase hex digits.
func ValidTaskID(id string) bool {
	if len(id) != 9 || id[0] != 't' {
		return false
	}
	for _, c := range id[1:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
