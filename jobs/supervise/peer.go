package supervise

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Who may drive a terminal. A run's tty socket (`grove attach`, `grove
// send`) takes keystrokes for its agent, so a confined agent that reached
// another run's socket could type into an unconfined agent, out of its
// sandbox: Landlock does not govern connecting to a socket file, and
// agents run as the daemon's user. The supervisor therefore refuses a
// peer that is, or descends from, the agent of a confined run. The
// supervisor is its agent's subreaper, so nothing its agent starts can
// leave that line of descent (orphans are reparented to it).
//
// A supervisor is recognised by what an agent cannot forge: a run
// directory of this home (beside the terminal's own; a confined agent
// cannot write there) whose proc.json, written by the supervisor itself,
// names that very process (pid and start time). A process merely called
// `… supervise DIR` is walked past like any other.

// confinedPeer reports whether process pid belongs to a confined run of
// the home whose runs are in runsDir: its nearest ancestor (or itself)
// that is a supervisor of such a run recorded a Landlock sandbox. A
// process, or an ancestor, that cannot be read counts as confined.
func confinedPeer(pid int, runsDir string) bool {
	for range 128 {
		if pid <= 1 {
			return false // init: no supervisor above
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 20 {
			return true
		}
		if dir, ok := supervisedRun(pid, f[19], runsDir); ok {
			a, recorded, err := ReadApplied(dir)
			return err != nil || (recorded && a.Landlock)
		}
		ppid, err := strconv.Atoi(f[1]) // field 4
		if err != nil {
			return true
		}
		pid = ppid
	}
	return true
}

// supervisedRun returns the run dir of pid (whose start time, field 22 of
// its stat, is start) when it is the supervisor of a run in runsDir: `…
// supervise DIR`, or a standby holding the lock of the run it took, and
// DIR's proc.json names pid and start.
func supervisedRun(pid int, start, runsDir string) (dir string, ok bool) {
	proc := "/proc/" + strconv.Itoa(pid)
	cmdline, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return "", false
	}
	argv := bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0})
	if len(argv) < 2 || string(argv[1]) != "supervise" {
		return "", false
	}
	var dirs []string
	if len(argv) >= 3 && !bytes.HasPrefix(argv[2], []byte("-")) {
		dirs = append(dirs, string(argv[2]))
	} else if fds, err := os.ReadDir(proc + "/fd"); err == nil { // a standby
		for _, fd := range fds {
			if t, err := os.Readlink(proc + "/fd/" + fd.Name()); err == nil && strings.HasSuffix(t, "/"+LockFile) {
				dirs = append(dirs, filepath.Dir(t))
			}
		}
	}
	for _, d := range dirs {
		if filepath.Dir(filepath.Clean(d)) != filepath.Clean(runsDir) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, ProcFile))
		if err != nil {
			continue
		}
		var p Proc
		if json.Unmarshal(b, &p) == nil && p.Pid == pid && strconv.FormatUint(p.StartTime, 10) == start {
			return d, true
		}
	}
	return "", false
}
