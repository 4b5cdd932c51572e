// Package procscan finds processes by what they use, from /proc: those
// working inside a directory (cwd, root, executable, open descriptors,
// memory maps) and those carrying an environment variable. The at-risk
// gate, the supervisor and the session watcher share it. Linux only.
package procscan

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
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
// root, an open descriptor or a memory mapping under one of roots.
func procUses(pd string, roots []string) bool {
	if zombie(pd) {
		return false
	}
	for _, l := range []string{"cwd", "root", "exe"} {
		if t, err := os.Readlink(pd + "/" + l); err == nil && under(t, roots) {
			return true
		}
	}
	if fds, err := os.ReadDir(pd + "/fd"); err == nil {
		for _, fd := range fds {
			if t, err := os.Readlink(pd + "/fd/" + fd.Name()); err == nil && strings.HasPrefix(t, "/") && under(t, roots) {
				return true
			}
		}
	}
	if b, err := os.ReadFile(pd + "/maps"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			// address perms offset dev inode pathname
			line := sc.Text()
			if i := strings.IndexByte(line, '/'); i >= 0 && under(line[i:], roots) {
				return true
			}
		}
	}
	return false
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

// WithEnv returns the pids of live processes (not the caller)
// whose initial environment holds key=value exactly, from
// /proc/<pid>/environ: a process that left its group and its directory
// (setsid, cd /) still carries GROVE_TASK_ID or GROVE_SESSION. Processes
// whose environ cannot be read (another user's) are not seen.
func WithEnv(key, value string) ([]int, error) {
	want := []byte(key + "=" + value)
	return matchProcs(func(pd string) bool {
		b, err := os.ReadFile(pd + "/environ")
		if err != nil || zombie(pd) {
			return false
		}
		for _, kv := range bytes.Split(b, []byte{0}) {
			if bytes.Equal(kv, want) {
				return true
			}
		}
		return false
	})
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
