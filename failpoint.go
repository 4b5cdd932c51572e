package grove

import (
	"os"
	"strings"
	"syscall"
)

// FailpointEnv names the environment variable that arms crash points: a
// comma-separated list of failpoint names. It exists for crash tests: a
// test starts the daemon with GROVE_FAILPOINTS=close.after-move, the
// daemon kills itself (SIGKILL, no deferred function runs, as in a power
// cut) the first time it reaches that point, and the test starts a new
// daemon and checks that the work resumes or is kept.
//
// Nobody sets it in normal use; unset, a failpoint costs one map lookup.
const FailpointEnv = "GROVE_FAILPOINTS"

// armed is read once, at start: the set of failpoints that kill the process.
var armed = parseFailpoints(os.Getenv(FailpointEnv))

func parseFailpoints(s string) map[string]bool {
	if s == "" {
		return nil
	}
	m := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		if name = strings.TrimSpace(name); name != "" {
			m[name] = true
		}
	}
	return m
}

// Failpoint marks a step boundary named name (e.g. "create.after-branch").
// When name is armed in $GROVE_FAILPOINTS the process dies there at once
// with SIGKILL; otherwise it does nothing. Names are stable: crash tests
// refer to them. Listing every call site: grep -rn 'grove.Failpoint('.
func Failpoint(name string) {
	if armed[name] {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; never return past the point
	}
}

// FailpointArmed reports whether name is armed (for code that must decide
// before a step whether it would die in it, e.g. a child process).
func FailpointArmed(name string) bool { return armed[name] }
