package supervise

import (
	"bytes"
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

// confinedPeer reports whether process pid belongs to a confined run: its
// nearest ancestor (or itself) that is a grove supervisor recorded a
// Landlock sandbox for its run. A process, or an ancestor, that cannot be
// read counts as confined (refused).
func confinedPeer(pid int) bool {
	for range 128 {
		if pid <= 1 {
			return false // init: no supervisor above
		}
		if dir, ok := supervisedRun(pid); ok {
			a, recorded, err := ReadApplied(dir)
			return err != nil || (recorded && a.Landlock)
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 2 {
			return true
		}
		ppid, err := strconv.Atoi(f[1]) // field 4
		if err != nil {
			return true
		}
		pid = ppid
	}
	return true
}

// supervisedRun returns the run dir of pid when it is a grove supervisor
// (`... supervise DIR`, or a standby holding a run's lock file).
func supervisedRun(pid int) (dir string, ok bool) {
	proc := "/proc/" + strconv.Itoa(pid)
	cmdline, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return "", false
	}
	argv := bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0})
	if len(argv) < 2 || string(argv[1]) != "supervise" {
		return "", false
	}
	if len(argv) >= 3 && !bytes.HasPrefix(argv[2], []byte("-")) {
		return string(argv[2]), true
	}
	// A standby: the run is the one whose lock it was handed.
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return "", false
	}
	for _, fd := range fds {
		t, err := os.Readlink(proc + "/fd/" + fd.Name())
		if err == nil && strings.HasSuffix(t, "/"+LockFile) {
			if _, err := os.Stat(filepath.Join(filepath.Dir(t), SpecFile)); err == nil {
				return filepath.Dir(t), true
			}
		}
	}
	return "", false
}
