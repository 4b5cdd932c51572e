package supervise

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroup is a run's own cgroup: one directory per v1 hierarchy (memory,
// pids) or one v2 directory. The agent is forked into it; it is removed
// when the run ends.
type cgroup struct {
	v2   bool
	dirs []string // the run's directories, one per hierarchy
	back []string // v1: the supervisor's own directories, same order
	fd   int      // v2: the directory, for CLONE_INTO_CGROUP
}

// newCgroup creates the cgroup name below the supervisor's own cgroup and
// sets its limits (memory in bytes, procs: pids.max; 0 is no limit). Any
// failure removes what was created and is returned: the caller records
// the limit as not enforced.
func newCgroup(name string, memory, procs int64) (*cgroup, error) {
	if name == "" {
		return nil, errors.New("no cgroup name")
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return newCgroupV2(own[""], name, memory, procs)
	}
	cg := &cgroup{fd: -1}
	limits := []struct {
		ctrl, file string
		v          int64
	}{{"memory", "memory.limit_in_bytes", memory}, {"pids", "pids.max", procs}}
	for _, l := range limits {
		if l.v <= 0 {
			continue
		}
		path, ok := own[l.ctrl]
		if !ok {
			cg.remove()
			return nil, fmt.Errorf("no cgroup v1 %s hierarchy", l.ctrl)
		}
		mine := filepath.Join(cgroupRoot, l.ctrl, path)
		dir := filepath.Join(mine, "grove-"+name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			cg.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		cg.dirs, cg.back = append(cg.dirs, dir), append(cg.back, mine)
		if err := os.WriteFile(filepath.Join(dir, l.file), []byte(strconv.FormatInt(l.v, 10)), 0); err != nil {
			cg.remove()
			return nil, fmt.Errorf("set %s: %w", l.file, err)
		}
	}
	return cg, nil
}

func newCgroupV2(path, name string, memory, procs int64) (*cgroup, error) {
	dir := filepath.Join(cgroupRoot, path, "grove-"+name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	cg := &cgroup{v2: true, dirs: []string{dir}, fd: -1}
	set := func(file string, v int64) error {
		if v <= 0 {
			return nil
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(v, 10)), 0); err != nil {
			return fmt.Errorf("set %s (is the controller enabled in the parent's cgroup.subtree_control?): %w", file, err)
		}
		return nil
	}
	if err := set("memory.max", memory); err != nil {
		cg.remove()
		return nil, err
	}
	if err := set("pids.max", procs); err != nil {
		cg.remove()
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		cg.remove()
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	cg.fd = fd
	return cg, nil
}

// ownCgroups maps each v1 controller (and "" for v2) to the supervisor's
// cgroup path, from /proc/self/cgroup.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroup: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			out[ctrl] = parts[2]
		}
	}
	return out, sc.Err()
}

// describe names the cgroup for Applied.
func (cg *cgroup) describe() string {
	v := "v1"
	if cg.v2 {
		v = "v2"
	}
	return v + " " + strings.Join(cg.dirs, ", ")
}

// enterThread puts the calling (locked) thread's next child into the
// cgroup: v2 through CLONE_INTO_CGROUP, v1 by moving the thread itself
// (a child starts in its forking thread's cgroups). left moves the thread
// back.
//
// The way back is opened before the thread enters: Landlock, which the
// thread takes on next, would refuse to open the supervisor's own cgroup
// files afterwards (it checks at open, not at write), and a thread that
// stayed would keep the run's cgroup busy for the supervisor's lifetime.
func (cg *cgroup) enterThread(attr *syscall.SysProcAttr) (left func(), err error) {
	if cg.v2 {
		attr.UseCgroupFD, attr.CgroupFD = true, cg.fd
		return func() {}, nil
	}
	tid := []byte(strconv.Itoa(unix.Gettid()))
	backs := make([]*os.File, 0, len(cg.back))
	closeBacks := func() {
		for _, f := range backs {
			_ = f.Close()
		}
	}
	for _, b := range cg.back {
		f, err := os.OpenFile(filepath.Join(b, "tasks"), os.O_WRONLY, 0)
		if err != nil {
			closeBacks()
			return nil, fmt.Errorf("open own cgroup: %w", err)
		}
		backs = append(backs, f)
	}
	goBack := func(n int) {
		for _, f := range backs[:n] {
			if _, err := f.Write(tid); err != nil {
				fmt.Fprintf(os.Stderr, "grove: supervisor thread could not leave the run's cgroup (%s): %v\n", f.Name(), err)
			}
		}
		closeBacks()
	}
	for i, dir := range cg.dirs {
		if err := os.WriteFile(filepath.Join(dir, "tasks"), tid, 0); err != nil {
			goBack(i)
			return nil, fmt.Errorf("join cgroup %s: %w", dir, err)
		}
	}
	return func() { goBack(len(backs)) }, nil
}

// moveOwnThreadsOut moves any of this process's threads still listed in
// the v1 directory dir (i is its index) back to the supervisor's own
// cgroup; remove's last resort for a thread that never left.
func (cg *cgroup) moveOwnThreadsOut(i int) {
	if cg.v2 {
		return
	}
	b, err := os.ReadFile(filepath.Join(cg.dirs[i], "tasks"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if _, err := os.Stat("/proc/self/task/" + f); err == nil {
			_ = os.WriteFile(filepath.Join(cg.back[i], "tasks"), []byte(f), 0)
		}
	}
}

// remove deletes the cgroup's directories. It runs once the agent has
// ended and its group was cleaned up, so whatever is still listed in a
// directory (a fork-bomb child that escaped the group's kill, one exiting)
// is the run's and gets SIGKILL, and a thread of this process still listed
// is moved out; a busy directory is retried for up to ten seconds, then
// said on stderr (the run's log).
func (cg *cgroup) remove() {
	if cg.fd >= 0 {
		_ = unix.Close(cg.fd)
		cg.fd = -1
	}
	deadline := time.Now().Add(10 * time.Second)
	for i, dir := range cg.dirs {
		for {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				listed, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				fmt.Fprintf(os.Stderr, "grove: cannot remove the run's cgroup %s: %v (processes: %s)\n",
					dir, err, strings.Join(strings.Fields(string(listed)), " "))
				break
			}
			if len(cg.back) > i {
				cg.moveOwnThreadsOut(i)
			}
			killListed(dir)
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// killListed sends SIGKILL to every process a cgroup directory lists
// (cgroup.procs in v1 and v2).
func killListed(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 && pid != os.Getpid() {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}
