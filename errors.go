package grove

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers compare with errors.Is.
var (
	// ErrNotFound means a task, session, repo or workspace does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUsage marks an error in how a command was called (exit code 2).
	ErrUsage = errors.New("usage error")
	// ErrBadRequest marks a well-formed request that cannot be done as
	// asked: a path that is no repository, an unknown base, an ambiguous
	// id (exit code 1, unlike ErrUsage).
	ErrBadRequest = errors.New("bad request")
	// ErrConflict means an apply found conflicting changes.
	ErrConflict = errors.New("conflict")
	// ErrAtRisk means a destructive action was refused by the at-risk gate.
	ErrAtRisk = errors.New("work at risk")
	// ErrDaemonRunning means another daemon already serves this home.
	ErrDaemonRunning = errors.New("daemon already running")
)

// UserError is an error a person can act on: a one-line message and a hint
// saying what to do next. It wraps an optional cause (often a sentinel), so
// errors.Is(err, ErrUsage) works through it.
type UserError struct {
	Msg  string // one line, lowercase, no trailing period
	Hint string // what to do next; may be empty
	Err  error  // cause; may be nil
}

func (e *UserError) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *UserError) Unwrap() error { return e.Err }

// Userf builds a UserError with a hint and a cause.
func Userf(cause error, hint string, format string, args ...any) *UserError {
	return &UserError{Msg: fmt.Sprintf(format, args...), Hint: hint, Err: cause}
}

// HintOf returns the hint of the first UserError in err's chain, or "".
func HintOf(err error) string {
	var ue *UserError
	if errors.As(err, &ue) {
		return ue.Hint
	}
	return ""
}
