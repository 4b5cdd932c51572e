package grove

import (
	"fmt"
	"slices"
	"time"
)

// Session is a named, long-lived workspace that successive tasks reuse one
// at a time, optionally with a supervised service on a leased port.
type Session struct {
	ID           string       `json:"id"` // the caller's key
	RepoID       int64        `json:"repo_id"`
	RepoPath     string       `json:"repo"`
	State        SessionState `json:"state"`
	Reason       string       `json:"reason,omitempty"` // why it is dead or failed
	BaseCommit   string       `json:"base_commit"`
	TargetBranch string       `json:"target_branch"`
	Serve        []string     `json:"serve,omitempty"`
	Port         int          `json:"port,omitempty"`
	// LastPort is the port it held before its lease expired: resume asks
	// for it again.
	LastPort int `json:"last_port,omitempty"`
	// Restart is the service's restart policy; Restarts counts the
	// restarts since the service was last started by hand, MaxRestarts
	// caps them; RestartAt is when the next one is due (nil: none).
	Restart     RestartPolicy `json:"restart"`
	Restarts    int           `json:"restarts"`
	MaxRestarts int           `json:"max_restarts"`
	RestartAt   *time.Time    `json:"restart_at,omitempty"`
	// BaseHeld is set (to the commit) once changes made in the session
	// outside tasks were committed into its branch: from then on the base
	// no longer moves forward at apply, so they are never counted applied.
	BaseHeld   string    `json:"base_held,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"` // last activity
	Activity   string    `json:"activity,omitempty"`
	StateAt    time.Time `json:"state_at"` // when State last changed
}

// SessionState is where a session is in its life.
type SessionState = string

// Session states.
const (
	SessionStarting SessionState = "starting" // worktree or service being started; not serving yet
	SessionLive     SessionState = "live"     // worktree ready, service (if any) listening on its port
	SessionEvicted  SessionState = "evicted"  // service stopped by grove, worktree kept
	SessionDead     SessionState = "dead"     // the service exited (or lost its port); Reason says how
	SessionFailed   SessionState = "failed"   // could not be started (no port, port taken, never listened)
	SessionClosed   SessionState = "closed"   // worktree removed, port freed
)

// RestartPolicy says when a session's service that exited is started again.
type RestartPolicy = string

// Restart policies.
const (
	RestartNo        RestartPolicy = "no"
	RestartOnFailure RestartPolicy = "on-failure" // a non-zero exit, a signal, a lost supervisor
	RestartAlways    RestartPolicy = "always"
)

// ValidRestart reports whether p is a known restart policy.
func ValidRestart(p string) bool {
	return p == RestartNo || p == RestartOnFailure || p == RestartAlways
}

// sessionMoves is the session transition table: from a state, the states
// a session may move to. Every session state change goes through it.
var sessionMoves = map[SessionState][]SessionState{
	SessionStarting: {SessionStarting, SessionLive, SessionDead, SessionFailed, SessionEvicted, SessionClosed},
	SessionLive:     {SessionLive, SessionEvicted, SessionDead, SessionClosed, SessionStarting},
	SessionEvicted:  {SessionEvicted, SessionStarting, SessionClosed},
	SessionDead:     {SessionDead, SessionStarting, SessionEvicted, SessionClosed},
	SessionFailed:   {SessionFailed, SessionStarting, SessionEvicted, SessionClosed},
	SessionClosed:   {SessionStarting},
}

// AllSessionStates lists every session state.
var AllSessionStates = []SessionState{SessionStarting, SessionLive, SessionEvicted, SessionDead, SessionFailed, SessionClosed}

// SessionCanMove reports whether a session may go from one state to another.
func SessionCanMove(from, to SessionState) bool {
	return slices.Contains(sessionMoves[from], to)
}

// SessionFrom lists the states a session may reach `to` from.
func SessionFrom(to SessionState) []SessionState {
	var out []SessionState
	for _, s := range AllSessionStates {
		if SessionCanMove(s, to) {
			out = append(out, s)
		}
	}
	return out
}

// CheckSessionMove returns an error naming the move when it is not allowed.
func CheckSessionMove(from, to SessionState) error {
	if !SessionCanMove(from, to) {
		return fmt.Errorf("session cannot go from %s to %s", from, to)
	}
	return nil
}

// SessionDown reports whether a session in state s has no service serving
// (a task or resume starts it again).
func SessionDown(s SessionState) bool {
	return s == SessionEvicted || s == SessionDead || s == SessionFailed
}
