package supervise

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/grove-dev/grove/gitops/procscan"
)

// Owner says which processes belong to one run of a task, for Survivors.
type Owner struct {
	// Dir is the run directory ("" if unknown): its proc.json names the
	// supervisor, its agent.pid the agent's process group.
	Dir string
	// Supervisor is the supervisor's identity as the daemon recorded it
	// (zero if none): it is checked even when Dir is gone.
	Supervisor Proc
	// TaskID finds processes by their GROVE_TASK_ID, which an agent's
	// children keep after setsid and cd.
	TaskID string
	// WorkDir, if not "", adds processes working inside it (cwd, open
	// files, mappings): only for a worktree the task has to itself.
	WorkDir string
}

// Survivors returns the pids of live processes of the run o describes: its
// supervisor, the members of its agent's process group, processes carrying
// GROVE_TASK_ID=o.TaskID and, with o.WorkDir, processes inside it. A run
// with survivors is not lost, and no new attempt of its task may start.
// It fails closed: an error (a file that exists but cannot be read, /proc
// unreadable) is returned, and callers treat it as "alive".
func Survivors(o Owner) ([]int, error) {
	seen := map[int]bool{}
	add := func(pids ...int) {
		for _, p := range pids {
			if p > 0 && p != os.Getpid() {
				seen[p] = true
			}
		}
	}
	sup := o.Supervisor
	if o.Dir != "" {
		p, err := ReadProc(o.Dir)
		switch {
		case err == nil:
			if p.Alive() {
				add(p.Pid)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
		pgid, err := readAgentPid(o.Dir)
		if err != nil {
			return nil, err
		}
		if pgid > 0 {
			members, err := groupMembers(pgid)
			if err != nil {
				return nil, err
			}
			add(members...)
		}
	}
	if sup.Pid > 0 && sup.Alive() {
		add(sup.Pid)
	}
	if o.TaskID != "" || o.WorkDir != "" {
		pids, err := procscan.InOrWithEnv(o.WorkDir, "GROVE_TASK_ID", o.TaskID)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("find processes of task %s in %s: %w", o.TaskID, o.WorkDir, err)
		}
		add(pids...)
	}
	out := make([]int, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out, nil
}

// readAgentPid reads dir's agent.pid; 0 when there is none.
func readAgentPid(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, AgentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read agent pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("decode agent pid %s: %w", dir, err)
	}
	return pid, nil
}

// groupMembers lists the live (not zombie) processes of group pgid.
func groupMembers(pgid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue // gone meanwhile, or a zombie: holds nothing
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid { // field 5: pgrp
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
