package supervise

import (
	"encoding/binary"
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
// group pgrp waits for input from it: no thread of the group is running,
// and one sleeps in a system call waiting to read the terminal (rdev):
//   - read/readv/pread64 on a descriptor that is the terminal (a shell's
//     `read`, a line-reading program);
//   - poll/ppoll with the terminal in its pollfd array for POLLIN, or
//     select/pselect6 with it in its read set (the arrays are read from
//     /proc/PID/mem);
//   - epoll_wait/epoll_pwait on an epoll instance that watches the terminal
//     for EPOLLIN (/proc/PID/fdinfo/EPFD): event-loop programs such as Node.
//
// The system call and its arguments come from /proc/PID/task/TID/syscall;
// the supervisor, the agent's ancestor, may read it (and mem) even under
// Yama's ptrace_scope=1. /proc/PID/wchan is no help: a read on a terminal
// sleeps in wait_woken, like many other waits. Combined with a quiet
// terminal, this tells "waiting for the user" from "working" (running, or
// blocked on a socket or a child) and "sleeping" (nanosleep, wait4).
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
			if err != nil || len(s) < 3 || found {
				continue
			}
			a0, err0 := strconv.ParseUint(strings.TrimPrefix(s[1], "0x"), 16, 64)
			a1, err1 := strconv.ParseUint(strings.TrimPrefix(s[2], "0x"), 16, 64)
			if err0 != nil || err1 != nil {
				continue
			}
			var fds []int // the descriptors the thread waits to read
			switch pollKinds[nr] {
			case kindRead:
				fds = []int{int(a0)}
			case kindPoll: // poll(fds, nfds, ...), ppoll
				fds = pollFds(p, a0, a1)
			case kindSelect: // select(nfds, readfds, ...), pselect6
				fds = selectFds(p, a0, a1)
			case kindEpoll: // epoll_wait(epfd, ...), epoll_pwait, epoll_pwait2
				fds = epollFds(p, a0)
			}
			for _, fd := range fds {
				if isTerm(p, strconv.Itoa(fd)) {
					pid, how, found = p, fmt.Sprintf("%s on fd %d (%s)", callNames[nr], fd, slaveName), true
					break
				}
			}
		}
	}
	return pid, how, found
}

// pollFds reads the pollfd array of a thread blocked in poll: the
// descriptors it waits to read. The supervisor may read the memory of the
// agent, its descendant (the same access as /proc/PID/syscall).
func pollFds(pid int, addr, n uint64) []int {
	if n == 0 || n > 4096 {
		return nil
	}
	b, err := readMem(pid, addr, int(n)*8) // struct pollfd { int fd; short events, revents; }
	if err != nil {
		return nil
	}
	var fds []int
	for i := 0; i+8 <= len(b); i += 8 {
		fd := int(int32(binary.NativeEndian.Uint32(b[i:])))
		if binary.NativeEndian.Uint16(b[i+4:])&unix.POLLIN != 0 && fd >= 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

// selectFds reads the read set of a thread blocked in select.
func selectFds(pid int, nfds, addr uint64) []int {
	if addr == 0 || nfds == 0 || nfds > 1<<16 {
		return nil
	}
	b, err := readMem(pid, addr, int(nfds+63)/64*8)
	if err != nil {
		return nil
	}
	var fds []int
	for fd := 0; fd < int(nfds); fd++ {
		word := binary.NativeEndian.Uint64(b[fd/64*8:])
		if word&(1<<(fd%64)) != 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

// epollFds lists the descriptors an epoll instance watches for input,
// from /proc/PID/fdinfo/EPFD ("tfd: N events: MASK ...").
func epollFds(pid int, epfd uint64) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, epfd))
	if err != nil {
		return nil
	}
	var fds []int
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "tfd:" || f[2] != "events:" {
			continue
		}
		fd, err1 := strconv.Atoi(f[1])
		ev, err2 := strconv.ParseUint(f[3], 16, 32)
		if err1 == nil && err2 == nil && ev&unix.EPOLLIN != 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

func readMem(pid int, addr uint64, n int) ([]byte, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return nil, err
	}
	return b, nil
}

// How a system call waits for input, by number.
const (
	kindRead = iota + 1
	kindPoll
	kindSelect
	kindEpoll
)

// System calls a thread waiting for terminal input sleeps in.
var (
	pollKinds = map[int]int{unix.SYS_READ: kindRead, unix.SYS_READV: kindRead, unix.SYS_PREAD64: kindRead,
		unix.SYS_PPOLL: kindPoll, unix.SYS_PSELECT6: kindSelect,
		unix.SYS_EPOLL_PWAIT: kindEpoll, unix.SYS_EPOLL_PWAIT2: kindEpoll}
	callNames = map[int]string{unix.SYS_READ: "read", unix.SYS_READV: "readv", unix.SYS_PREAD64: "pread64",
		unix.SYS_PPOLL: "ppoll", unix.SYS_PSELECT6: "pselect6",
		unix.SYS_EPOLL_PWAIT: "epoll_pwait", unix.SYS_EPOLL_PWAIT2: "epoll_pwait2"}
)
