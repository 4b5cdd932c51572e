package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// WaitQuiet is how long a terminal must have been quiet (no output, no
// input) before an agent blocked reading it counts as waiting for input.
const WaitQuiet = 2 * time.Second

// Waiting is the content of WaitingFile: the supervisor writes it when the
// agent starts waiting for input and removes it at the next output or
// input. N numbers the episodes of one run (1, 2, ...).
type Waiting struct {
	N     int       `json:"n"`
	Since time.Time `json:"since"` // the last output or input
	Pid   int       `json:"pid"`   // the process found waiting
	How   string    `json:"how"`   // e.g. "read(0) on /dev/pts/3"
}

// ReadWaiting returns the run's waiting file; ok is false when the agent
// is not waiting for input (or the run has no terminal).
func ReadWaiting(dir string) (w Waiting, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, WaitingFile))
	if errors.Is(err, fs.ErrNotExist) {
		return w, false, nil
	}
	if err != nil {
		return w, false, fmt.Errorf("read waiting file: %w", err)
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return w, false, fmt.Errorf("decode waiting file %s: %w", dir, err)
	}
	return w, true, nil
}

// IsWaiting reports whether the agent of the run in dir waits for input.
func IsWaiting(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, WaitingFile))
	return err == nil
}

// detect writes WaitingFile when the terminal has been quiet for WaitQuiet
// and its foreground process group is blocked reading the terminal (see
// blockedOnTerminal), until end stops it.
func (t *terminal) detect() {
	var rdev uint64
	var st syscall.Stat_t
	if err := syscall.Stat(t.slaveName, &st); err == nil {
		rdev = st.Rdev
	}
	tick := time.NewTicker(WaitQuiet / 4)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		quietSince, busy := t.activity, t.waiting != nil || t.ended
		t.mu.Unlock()
		if busy || time.Since(quietSince) < WaitQuiet {
			continue
		}
		pgrp, err := unix.IoctlGetInt(int(t.master.Fd()), unix.TIOCGPGRP)
		if err != nil || pgrp <= 0 {
			continue
		}
		pid, how, ok := blockedOnTerminal(pgrp, rdev, t.slaveName)
		if !ok {
			continue
		}
		t.mu.Lock()
		if t.waiting == nil && !t.ended && t.activity.Equal(quietSince) {
			t.episodes++
			w := Waiting{N: t.episodes, Since: quietSince, Pid: pid, How: how}
			b, _ := json.Marshal(w)
			if err := writeFileAtomic(filepath.Join(t.dir, WaitingFile), b); err == nil {
				t.waiting = &w
			}
		}
		t.mu.Unlock()
	}
}

// blockedOnTerminal reports whether the terminal's foreground process
// group pgrp waits for input from it. The signal, per thread of each
// process of the group, is /proc/PID/task/TID/syscall (the system call a
// blocked thread sleeps in, with its arguments; readable by the supervisor,
// the agent's ancestor, even under Yama's ptrace_scope=1):
//   - no thread of the group is running, and
//   - one thread sleeps in read(2)/readv/pread on a descriptor that is the
//     terminal's slave (a shell's `read`, a line-reading program), or in
//     poll/select/epoll_wait while its process has the terminal as stdin
//     (event-loop programs such as Node, which wait for the terminal to
//     become readable rather than in read).
//
// Combined with a quiet terminal this tells "waiting for the user" from
// "thinking" (running, or sleeping on a network socket with a process whose
// stdin is not the terminal) and from "sleeping" (nanosleep, wait4).
func blockedOnTerminal(pgrp int, rdev uint64, slaveName string) (pid int, how string, ok bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, "", false
	}
	isTerm := func(pid int, fd string) bool {
		var st syscall.Stat_t
		return syscall.Stat(fmt.Sprintf("/proc/%d/fd/%s", pid, fd), &st) == nil &&
			st.Mode&syscall.S_IFMT == syscall.S_IFCHR && st.Rdev == rdev
	}
	found := false
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(p)
		if err != nil || len(f) < 3 || f[2] != strconv.Itoa(pgrp) { // field 5: pgrp
			continue
		}
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		if err != nil {
			continue
		}
		for _, tk := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", p, tk.Name()))
			if err != nil {
				continue
			}
			s := strings.Fields(string(b))
			if len(s) == 0 || s[0] == "running" {
				return 0, "", false // busy
			}
			nr, err := strconv.Atoi(s[0])
			if err != nil || len(s) < 2 || found {
				continue
			}
			switch {
			case readCalls[nr] != "":
				fd, err := strconv.ParseUint(strings.TrimPrefix(s[1], "0x"), 16, 32)
				if err == nil && isTerm(p, strconv.FormatUint(fd, 10)) {
					pid, how, found = p, fmt.Sprintf("%s(%d) on %s", readCalls[nr], fd, slaveName), true
				}
			case pollCalls[nr] != "":
				if isTerm(p, "0") {
					pid, how, found = p, fmt.Sprintf("%s with %s as stdin", pollCalls[nr], slaveName), true
				}
			}
		}
	}
	return pid, how, found
}

// System calls a thread waiting for terminal input sleeps in.
var (
	readCalls = map[int]string{unix.SYS_READ: "read", unix.SYS_READV: "readv", unix.SYS_PREAD64: "pread64"}
	pollCalls = map[int]string{unix.SYS_PPOLL: "ppoll", unix.SYS_PSELECT6: "pselect6", unix.SYS_EPOLL_PWAIT: "epoll_pwait",
		unix.SYS_EPOLL_PWAIT2: "epoll_pwait2"}
)
