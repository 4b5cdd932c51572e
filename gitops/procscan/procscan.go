// Package procscan finds processes by what they use, from /proc: those
// working inside a directory (cwd, root, executable, open descriptors,
// memory maps) and those carrying an environment variable. The at-risk
// gate, the supervisor and the session watcher share it. Linux only.
package procscan

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// In returns the pids of live processes that work inside dir (dir
// itself or below it): their working directory, their root, any open file
// descriptor or any file mapped into their memory is there. It reads /proc
// and excludes the caller's own pid. Processes whose /proc entries cannot
// be read (another user's) are not seen; zombies are skipped (they hold
// nothing).
//
// A writer that opened a file and then left the directory
// (`cd /; exec 3>>$WT/a.txt`) is found by its descriptor, a program run
// from the worktree by its mappings.
func In(dir string) ([]int, error) {
	roots, err := procRoots(dir)
	if err != nil {
		return nil, err
	}
	return matchProcs(func(pd string) bool { return procUses(pd, roots) })
}

// procRoots is dir made absolute, and its real path when that differs.
func procRoots(dir string) ([]string, error) {
	if dir == "" {
		return nil, errors.New("processes in a directory: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	roots := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		roots = append(roots, real)
	}
	return roots, nil
}

// under reports whether p (a path the kernel printed, maybe with a
// " (deleted)" suffix) is one of roots or inside one.
func under(p string, roots []string) bool {
	p = strings.TrimSuffix(p, " (deleted)")
	for _, root := range roots {
		if p == root || strings.HasPrefix(p, root+"/") {
			return true
		}
	}
	return false
}

// procUses reports whether the process at /proc/<pid> (pd) has its cwd,
// root, an open descriptor or a memory mapping under one of roots. A
// zombie holds none of them (its links cannot be read); one that matched
// is checked last, being rare.
//
// It runs for every process on the box several times per task, so it
// avoids allocations: one readlink buffer, one read buffer for maps, and
// a byte search for the roots before any line is parsed.
func procUses(pd string, roots []string) bool {
	var link [unix.PathMax]byte
	readlink := func(p string) (string, bool) {
		n, err := unix.Readlink(p, link[:])
		if err != nil || n <= 0 {
			return "", false
		}
		return string(link[:n]), true
	}
	readable := false
	for _, l := range []string{"/cwd", "/root", "/exe"} {
		t, ok := readlink(pd + l)
		if ok && under(t, roots) {
			return !zombie(pd)
		}
		readable = readable || (ok && l == "/exe")
	}
	if !readable {
		// No executable to name: a kernel thread or a zombie, which hold
		// no descriptors or mappings (or a process this user cannot
		// inspect, whose descriptors it cannot read either).
		return false
	}
	for _, fd := range dirNames(pd + "/fd") {
		if t, ok := readlink(pd + "/fd/" + fd); ok && strings.HasPrefix(t, "/") && under(t, roots) {
			return !zombie(pd)
		}
	}
	if mapsUse(pd+"/maps", roots) {
		return !zombie(pd)
	}
	return false
}

// dirNames lists the directory at path with raw system calls (a /proc
// directory: no poller registration, no stat); nil when it cannot be read.
func dirNames(path string) []string {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var names []string
	var buf [8 << 10]byte
	for {
		n, err := unix.ReadDirent(fd, buf[:])
		if err != nil || n <= 0 {
			return names
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// mapsBuf is reused by mapsUse; /proc/<pid>/maps files are read whole.
var mapsBuf = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// mapsUse reports whether the maps file at path maps a file under one of
// roots.
func mapsUse(path string, roots []string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	bp := mapsBuf.Get().(*[]byte)
	defer mapsBuf.Put(bp)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		b = b[:len(b)+n]
	}
	*bp = b[:0]
	hit := false
	for _, root := range roots {
		if bytes.Contains(b, []byte(root)) {
			hit = true
		}
	}
	if !hit {
		return false
	}
	for line := range bytes.Lines(b) {
		// address perms offset dev inode pathname
		line = bytes.TrimRight(line, "\n")
		if i := bytes.IndexByte(line, '/'); i >= 0 && under(string(line[i:]), roots) {
			return true
		}
	}
	return false
}

// WithEnv returns the pids of live processes (not the caller)
// whose initial environment holds key=value exactly, from
// /proc/<pid>/environ: a process that left its group and its directory
// (setsid, cd /) still carries GROVE_TASK_ID or GROVE_SESSION. Processes
// whose environ cannot be read (another user's) are not seen.
func WithEnv(key, value string) ([]int, error) {
	return matchProcs(func(pd string) bool { return hasEnv(pd, key, value) })
}

// InOrWithEnv is In(dir) and WithEnv(key, value) merged, in one walk of
// /proc: the processes that work inside dir or carry key=value. dir ""
// looks at the environment only, value "" at the directory only.
func InOrWithEnv(dir, key, value string) ([]int, error) {
	switch {
	case dir == "":
		return WithEnv(key, value)
	case value == "":
		return In(dir)
	}
	return InOrWithEnvSince(dir, key, value, 0)
}

// InOrWithEnvSince is InOrWithEnv restricted to processes that started at
// or after since (clock ticks after boot, as StartTicks gives; 0: all). The
// supervisor sweeps with its own start: a process older than it cannot be
// its agent's, and reading one small stat file first spares the costly
// look at every other process's descriptors and memory maps.
func InOrWithEnvSince(dir, key, value string, since uint64) ([]int, error) {
	var roots []string
	if dir != "" {
		var err error
		if roots, err = procRoots(dir); err != nil {
			return nil, err
		}
	}
	return matchProcs(func(pd string) bool {
		if since > 0 {
			if t, ok := startTicks(pd); !ok || t < since {
				return false
			}
		}
		return (value != "" && hasEnv(pd, key, value)) || (roots != nil && procUses(pd, roots))
	})
}

// StartTicks returns when process pid started, in clock ticks after boot
// (field 22 of /proc/<pid>/stat).
func StartTicks(pid int) (uint64, error) {
	t, ok := startTicks("/proc/" + strconv.Itoa(pid))
	if !ok {
		return 0, fmt.Errorf("read start time of process %d", pid)
	}
	return t, nil
}

// NowTicks is the current time in StartTicks' unit: clock ticks (USER_HZ,
// 100 per second on Linux) since boot, read from /proc/uptime, which counts
// from the same clock and rounds down the same way. A process started after
// the call has a start time at or after it.
func NowTicks() (uint64, bool) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, false
	}
	up, _, _ := bytes.Cut(b, []byte(" "))
	sec, frac, ok := bytes.Cut(up, []byte("."))
	if !ok || len(frac) != 2 {
		return 0, false
	}
	s, err1 := strconv.ParseUint(string(sec), 10, 64)
	h, err2 := strconv.ParseUint(string(frac), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return s*100 + h, true
}

// startTicks reads field 22 (starttime) of the stat file at pd.
func startTicks(pd string) (uint64, bool) {
	b, err := os.ReadFile(pd + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:]) // field 3 (state) onwards
	if len(f) < 20 {
		return 0, false
	}
	t, err := strconv.ParseUint(string(f[19]), 10, 64)
	return t, err == nil
}

// hasEnv reports whether the live process at pd has key=value in its
// initial environment.
func hasEnv(pd, key, value string) bool {
	b, err := os.ReadFile(pd + "/environ")
	if err != nil {
		return false
	}
	want := []byte(key + "=" + value)
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if bytes.Equal(kv, want) {
			return !zombie(pd)
		}
	}
	return false
}

// matchProcs returns, sorted, the pids of the processes (not the caller)
// whose /proc/<pid> directory match accepts.
func matchProcs(match func(pd string) bool) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if match("/proc/" + e.Name()) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// KillAll sends sig to every pid in pids; pids already gone are skipped.
func KillAll(pids []int, sig syscall.Signal) {
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
}

// zombie reports whether the process at pd has exited but not been reaped.
func zombie(pd string) bool {
	b, err := os.ReadFile(pd + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}
