package jobs

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/grove-dev/grove/gitops/procscan"
)

// portUse is what /proc/net/tcp{,6} say about one port.
type portUse struct {
	Listen []uint64 // socket inodes listening on it
	// Conns counts the connections on it: sockets whose local port it is
	// (the service's side) or whose remote port it is (a client on this
	// machine), established or closed less than a minute ago (TIME_WAIT
	// and the other closing states, on whichever side closed first), so a
	// short request between two samples is still seen.
	Conns int
}

// readPorts reads /proc/net/tcp and /proc/net/tcp6 once, by local port.
// Only ports in [lo, hi] are kept (0, 0: all).
func readPorts(lo, hi int) (map[int]*portUse, error) {
	out := map[int]*portUse{}
	read := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			if os.IsNotExist(err) {
				continue // no IPv6
			}
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		read++
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 {
				continue
			}
			use := func(addr string) *portUse {
				_, hexPort, ok := strings.Cut(addr, ":")
				if !ok {
					return nil
				}
				p, err := strconv.ParseUint(hexPort, 16, 16)
				if err != nil || p == 0 || (hi > 0 && (int(p) < lo || int(p) > hi)) {
					return nil
				}
				u := out[int(p)]
				if u == nil {
					u = &portUse{}
					out[int(p)] = u
				}
				return u
			}
			switch fl[3] {
			case "0A": // LISTEN
				if u := use(fl[1]); u != nil {
					if ino, err := strconv.ParseUint(fl[9], 10, 64); err == nil && ino != 0 {
						u.Listen = append(u.Listen, ino)
					}
				}
			case "07": // CLOSE: bound, not listening or connected
			default:
				local, remote := use(fl[1]), use(fl[2])
				if local != nil {
					local.Conns++
				}
				if remote != nil && remote != local {
					remote.Conns++
				}
			}
		}
	}
	if read == 0 {
		return nil, fmt.Errorf("read /proc/net/tcp: no such file")
	}
	return out, nil
}

// portFree reports whether nothing listens on port: none in /proc/net/tcp
// or tcp6, and a bind of the port on every address succeeds.
func portFree(port int) bool {
	use, err := readPorts(port, port)
	if err != nil || (use[port] != nil && len(use[port].Listen) > 0) {
		return false
	}
	return bindable(port)
}

// bindable reports whether a listener can bind port on every address.
func bindable(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// socketInodes returns the socket inodes pid holds open.
func socketInodes(pid int) []uint64 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []uint64
	for _, e := range ents {
		t, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(t, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out = append(out, ino)
			}
		}
	}
	return out
}

// holders returns the pids (not this process) holding any of inodes.
func holders(inodes []uint64) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		for _, ino := range socketInodes(pid) {
			if slices.Contains(inodes, ino) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// describePids names processes for a message: "pid 123 (python3)".
func describePids(pids []int) string {
	if len(pids) == 0 {
		return "a process grove cannot see (another user's?)"
	}
	var parts []string
	for _, p := range pids[:min(len(pids), 3)] {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		parts = append(parts, fmt.Sprintf("pid %d (%s)", p, strings.TrimSpace(string(comm))))
	}
	return strings.Join(parts, ", ")
}

// procInfo is what the service sweep needs of one process.
type procInfo struct {
	pid, sid  int
	startTime uint64
	env       [][]byte
}

func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:])) // [0] state (field 3)
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return procInfo{}, false
	}
	sid, _ := strconv.Atoi(f[3])
	st, _ := strconv.ParseUint(f[19], 10, 64)
	p := procInfo{pid: pid, sid: sid, startTime: st}
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil {
		p.env = bytes.Split(env, []byte{0})
	}
	return p, true
}

func (p procInfo) has(kv string) bool {
	return slices.ContainsFunc(p.env, func(e []byte) bool { return string(e) == kv })
}

// taskProcess reports whether p belongs to a task's agent (not the service).
func (p procInfo) taskProcess() bool {
	return slices.ContainsFunc(p.env, func(e []byte) bool {
		return bytes.HasPrefix(e, []byte("GROVE_TASK_ID=")) && len(e) > len("GROVE_TASK_ID=")
	})
}

// serviceTree describes a session service's processes: those in the
// supervisor's session (the supervisor runs setsid, the service in its own
// group inside it), and those that left it but carry the service's
// environment (GROVE_SESSION=<key> and GROVE_WORKTREE=<path>: unique per
// home). Processes started before the supervisor are never part of it.
type serviceTree struct {
	supPid   int
	supStart uint64
	key      string
	worktree string
}

// pids lists the live processes of the tree (not this process). With
// inWorktree, processes working in the worktree (cwd, fds, mappings:
// procscan.In) started after the supervisor are included too; a
// task's agent (GROVE_TASK_ID set) never is.
func (t serviceTree) pids(inWorktree bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var in []int
	if inWorktree && t.worktree != "" {
		in, _ = procscan.In(t.worktree)
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		p, ok := readProc(pid)
		if !ok || p.startTime < t.supStart || p.taskProcess() {
			continue
		}
		if (t.supPid > 0 && p.sid == t.supPid) ||
			(p.has("GROVE_SESSION="+t.key) && p.has("GROVE_WORKTREE="+t.worktree)) ||
			slices.Contains(in, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// owns reports whether a process of the tree holds one of inodes.
func (t serviceTree) owns(inodes []uint64) bool {
	for _, pid := range t.pids(false) {
		for _, ino := range socketInodes(pid) {
			if slices.Contains(inodes, ino) {
				return true
			}
		}
	}
	return false
}

// kill ends every process of the tree (worktree sweep included): TERM,
// up to grace, then KILL until none is left or tries run out. It returns
// the pids still alive at the end (none, normally).
func (t serviceTree) kill(grace time.Duration) []int {
	pids := t.pids(true)
	if len(pids) == 0 {
		return nil
	}
	procscan.KillAll(pids, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if pids = t.pids(true); len(pids) == 0 {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	for range 40 {
		if pids = t.pids(true); len(pids) == 0 {
			return nil
		}
		procscan.KillAll(pids, syscall.SIGKILL)
		time.Sleep(25 * time.Millisecond)
	}
	return t.pids(true)
}

// logTail returns the last n lines of a file (for messages).
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var keep []string
	for _, l := range ls {
		if strings.HasPrefix(l, "grove: agent started") {
			continue // the supervisor's own line
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, " | ")
}
