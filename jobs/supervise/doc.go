// Package supervise runs one agent (or service) process detached from the
// daemon, so that it survives a daemon restart, and lets any grove process
// find out later whether it is still alive and how it ended.
//
// Lifecycle of a run directory ($GROVE_HOME/runs/<id>/):
//
//	spec.json  written by Start before the supervisor is launched
//	log        the agent's stdout and stderr (the supervisor's too)
//	exit       written atomically (exit.tmp, fsync, rename) when the agent ends
//
// Start launches `grove supervise DIR` with Setsid, stdin from /dev/null and
// output to the log. Main (the body of that hidden command) starts the agent
// in its own process group in the work dir, forwards TERM/INT to the group,
// enforces the timeout (TERM, grace, KILL), kills what is left of the group
// and, with Sweep, every process whose cwd is inside the work dir, then
// writes the exit file. A run is alive while its supervisor's pid, start time
// and boot id all match (a zombie is not alive).
package supervise
