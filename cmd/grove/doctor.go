package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// Doctor check outcomes.
const (
	checkOK      = "ok"
	checkInfo    = "info"
	checkProblem = "problem"
)

// minFreeDisk is the free space on the home's filesystem below which
// doctor reports a problem.
const minFreeDisk = 1 << 30

// staleGitLock is how old a git *.lock file must be to be called stale.
const staleGitLock = 10 * time.Minute

// check is one line of `grove doctor`.
type check struct {
	Name    string `json:"name"`
	Status  string `json:"status"` // ok | info | problem
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

type doctorReport struct {
	OK     bool    `json:"ok"`
	Home   string  `json:"home"`
	Checks []check `json:"checks"`
	// Pool is each repository's warm pool (grove serve --warm N).
	Pool []store.PoolSummary `json:"pool"`
}

func (r *doctorReport) add(name, status, hint, format string, args ...any) {
	r.Checks = append(r.Checks, check{Name: name, Status: status, Message: fmt.Sprintf(format, args...), Hint: hint})
	if status == checkProblem {
		r.OK = false
	}
}

func (a *app) doctorCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check git, the home directory, the database, locks, supervisors and disk space",
		Long: `doctor checks what grove depends on and changes nothing: the git version
(2.38 or newer), the home directory (mode 0700, yours) and database (mode
0600), the database's integrity and migration state, lock files (the
daemon's; each repository's grove.lock held for long; git *.lock files left
by a killed git), supervisors still running for finished tasks, and free
disk space (1 GiB at least). Each problem gets one line and a hint; the exit
code is 1 if there is any.`,
		Example: `  grove doctor
  grove doctor --json
  grove --home /srv/grove doctor`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			home, err := a.homeDir()
			if err != nil {
				return err
			}
			rep := a.doctor(c.Context(), home)
			if asJSON {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else if err := printDoctor(a, rep); err != nil {
				return err
			}
			if n := problems(rep); n > 0 {
				return grove.Userf(nil, "", "doctor found %d problem%s", n, map[bool]string{true: "", false: "s"}[n == 1])
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func problems(rep doctorReport) int {
	n := 0
	for _, c := range rep.Checks {
		if c.Status == checkProblem {
			n++
		}
	}
	return n
}

func printDoctor(a *app, rep doctorReport) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	for _, c := range rep.Checks {
		status := map[string]string{checkOK: "ok", checkInfo: "info", checkProblem: "PROBLEM"}[c.Status]
		fmt.Fprintf(tw, "%s\t%s\t%s\n", status, c.Name, c.Message)
		if c.Hint != "" {
			fmt.Fprintf(tw, "\t\thint: %s\n", c.Hint)
		}
	}
	return tw.Flush()
}

// doctor runs every check. It never creates or migrates anything.
func (a *app) doctor(ctx context.Context, home string) doctorReport {
	rep := doctorReport{OK: true, Home: home}
	checkGit(ctx, &rep)
	checkSandbox(&rep) // sandbox_show.go
	if !checkHome(&rep, home) {
		checkDisk(&rep, home)
		return rep
	}
	st := a.checkAnyDatabase(ctx, &rep, home) // doctor_hosts.go
	if st != nil {
		defer st.Close()
	}
	checkHosts(ctx, &rep, st)
	checkLocks(ctx, &rep, home, st)
	checkSupervisors(ctx, &rep, home, st)
	checkSessions(ctx, &rep, st) // session_doctor.go
	checkDisk(&rep, home)
	checkTrash(&rep, home) // trash.go
	checkBackup(&rep, home)
	return rep
}

func checkGit(ctx context.Context, rep *doctorReport) {
	v, raw, err := gitops.Version(ctx)
	switch {
	case err != nil:
		rep.add("git", checkProblem, "install git 2.38 or newer and put it on PATH", "cannot run git: %v", err)
	case !gitops.VersionAtLeast(v, gitops.MinVersion):
		rep.add("git", checkProblem, "install git 2.38 or newer (grove needs merge-tree --write-tree)",
			"%s is older than %d.%d", raw, gitops.MinVersion[0], gitops.MinVersion[1])
	default:
		rep.add("git", checkOK, "", "%s", raw)
	}
}

// checkHome reports on the home directory; false if it does not exist
// (yet) or is unusable, so the checks that need it are skipped.
func checkHome(rep *doctorReport, home string) bool {
	fi, err := os.Stat(home)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.add("home", checkInfo, "", "%s does not exist yet; the first grove command creates it (mode 0700)", home)
		return false
	case err != nil:
		rep.add("home", checkProblem, "check the path and its permissions, or pass --home", "cannot read %s: %v", home, err)
		return false
	case !fi.IsDir():
		rep.add("home", checkProblem, "move it away, or pass --home DIR", "%s is not a directory", home)
		return false
	}
	perm := fi.Mode().Perm()
	ok := true
	if perm&0o077 != 0 {
		rep.add("home", checkProblem, "chmod 700 "+home, "%s has mode %04o, want 0700 (others can read agents' work and logs)", home, perm)
		ok = false
	}
	if st, isUnix := fi.Sys().(*syscall.Stat_t); isUnix && int(st.Uid) != os.Geteuid() {
		rep.add("home", checkProblem, "use your own --home, or chown it", "%s belongs to uid %d, not to you (uid %d)", home, st.Uid, os.Geteuid())
		ok = false
	} else if err := probeWritable(home); err != nil {
		rep.add("home", checkProblem, "chmod 700 "+home, "%s (mode %04o) is not writable by you (uid %d): %v", home, perm, os.Geteuid(), err)
		ok = false
	}
	if ok {
		rep.add("home", checkOK, "", "%s (mode %04o)", home, perm)
	}
	return true
}

// probeWritable creates and removes a file in dir: the only sure test that
// this process may write there (mode bits, ACLs, capabilities, read-only
// mounts all have their say).
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".doctor-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	cerr := f.Close()
	if err := os.Remove(name); err != nil {
		return err
	}
	return cerr
}

// checkDatabase checks the database file's mode, integrity and schema
// versions, and returns it open (nil if there is none or it cannot open).
func checkDatabase(ctx context.Context, rep *doctorReport, home string) *store.Store {
	path := filepath.Join(home, "grove.db")
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		rep.add("database", checkInfo, "", "no database yet; the first grove command creates it")
		return nil
	}
	if err != nil {
		rep.add("database", checkProblem, "check its permissions", "cannot read %s: %v", path, err)
		return nil
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			rep.add("database", checkProblem, "chmod 600 "+p, "%s has mode %04o, want 0600", p, perm)
		}
	}
	st, err := store.OpenExisting(ctx, home)
	if err != nil {
		rep.add("database", checkProblem, "stop grove serve and check the file; grove doctor changes nothing", "cannot open %s: %v", path, err)
		return nil
	}
	h, err := st.Health(ctx)
	if err != nil {
		rep.add("database", checkProblem, "stop grove serve, back up "+path+", then check it with sqlite3", "%v", err)
		return st
	}
	if len(h.Integrity) == 1 && h.Integrity[0] == "ok" {
		rep.add("database", checkOK, "", "%s: integrity ok, %s", path, humanBytes(uint64(fi.Size())))
	} else {
		rep.add("database", checkProblem, "stop grove serve, back up "+path+" and recover it with: sqlite3 "+path+" .recover",
			"%s fails its integrity check: %s", path, strings.Join(h.Integrity, "; "))
	}
	switch {
	case h.SchemaVersion > h.SchemaWant:
		rep.add("schema", checkProblem, "upgrade grove, or point --home elsewhere",
			"grove schema version %d is newer than this grove's %d", h.SchemaVersion, h.SchemaWant)
	case h.SchemaVersion < h.SchemaWant:
		rep.add("schema", checkProblem, "run grove serve once: it migrates",
			"grove schema version %d, this grove wants %d", h.SchemaVersion, h.SchemaWant)
	case h.RiverVersion > h.RiverWant:
		rep.add("schema", checkProblem, "upgrade grove, or point --home elsewhere",
			"River migrations at version %d, newer than this grove's %d", h.RiverVersion, h.RiverWant)
	case h.RiverVersion < h.RiverWant:
		rep.add("schema", checkProblem, "run grove serve once: it migrates",
			"River migrations at version %d, this grove wants %d", h.RiverVersion, h.RiverWant)
	default:
		rep.add("schema", checkOK, "", "grove schema %d, River migrations %d (current)", h.SchemaVersion, h.RiverVersion)
	}
	return st
}

// checkLocks reports the daemon lock, each repository's grove.lock (held
// for long: something is stuck) and git lock files a killed git left.
func checkLocks(ctx context.Context, rep *doctorReport, home string, st *store.Store) {
	if pid, up := daemonPid(home); up {
		rep.add("daemon", checkInfo, "", "grove serve is running (pid %d, holds daemon.lock)", pid)
	} else {
		rep.add("daemon", checkInfo, "", "no daemon running (daemon.lock not held); commands queue until grove serve runs")
	}
	if st == nil {
		return
	}
	if pools, err := st.PoolSummaries(ctx); err == nil {
		rep.Pool = pools
		ready, stale, up := 0, 0, 0
		for _, p := range pools {
			ready, stale, up = ready+p.Ready, stale+p.Stale, up+p.SetUp
		}
		msg := fmt.Sprintf("%d ready worktree(s) in %d repositor(ies) (grove serve --warm N), %d set up, %d not", ready, len(pools), up, ready-up)
		if stale > 0 {
			msg += fmt.Sprintf("; %d stale (found dirty, kept for the reaper and its gate)", stale)
		}
		rep.add("warm pool", checkInfo, "", "%s", msg)
	}
	repos, err := st.Repos(ctx)
	if err != nil {
		rep.add("locks", checkProblem, "check the database", "cannot list repositories: %v", err)
		return
	}
	found := false
	for _, r := range repos {
		if _, err := os.Stat(r.CommonDir); err != nil {
			rep.add("repo", checkInfo, "", "repository %s is gone (%v)", r.Path, err)
			continue
		}
		lock := filepath.Join(r.CommonDir, gitops.LockFile)
		if heldFor(lock, 2*time.Second) {
			found = true
			rep.add("locks", checkProblem, "a grove or git process is stuck holding it: find it with: fuser "+lock,
				"%s held for more than 2s", lock)
		}
		for _, l := range gitLocks(r.CommonDir) {
			fi, err := os.Stat(l)
			if err != nil || time.Since(fi.ModTime()) < staleGitLock {
				continue
			}
			found = true
			rep.add("locks", checkProblem, "if no git command is running in "+r.Path+": rm "+l,
				"stale git lock %s (%s old)", l, time.Since(fi.ModTime()).Round(time.Minute))
		}
	}
	if !found {
		rep.add("locks", checkOK, "", "no stuck repository lock, no stale git lock (%d repositories)", len(repos))
	}
}

// heldFor reports whether someone holds an flock on path for all of d.
func heldFor(path string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !grove.FlockHeld(path) {
			return false
		}
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gitLocks lists the lock files git leaves in a common dir and its
// worktrees' admin dirs when it is killed.
func gitLocks(common string) []string {
	var out []string
	dirs := []string{common}
	if wts, err := filepath.Glob(filepath.Join(common, "worktrees", "*")); err == nil {
		dirs = append(dirs, wts...)
	}
	for _, d := range dirs {
		for _, name := range []string{"index.lock", "HEAD.lock", "config.lock", "packed-refs.lock", "shallow.lock"} {
			if p := filepath.Join(d, name); fileExists(p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

var taskRunDir = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(t[0-9a-f]{8})-([0-9]+)$`) })

// checkSupervisors finds supervisors still alive (their run lock held)
// for tasks that are finished or unknown.
func checkSupervisors(ctx context.Context, rep *doctorReport, home string, st *store.Store) {
	ents, err := os.ReadDir(filepath.Join(home, "runs"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		rep.add("supervisors", checkProblem, "check the permissions of "+filepath.Join(home, "runs"), "cannot list runs: %v", err)
		return
	}
	alive, orphans := 0, 0
	for _, e := range ents {
		m := taskRunDir().FindStringSubmatch(e.Name())
		dir := filepath.Join(home, "runs", e.Name())
		if m == nil || !supervise.Alive(dir) {
			continue
		}
		alive++
		state := "unknown to the database"
		if st != nil {
			t, err := st.Task(ctx, m[1])
			switch {
			case err == nil:
				attempt, _ := strconv.Atoi(m[2])
				if !t.State.Finished() && t.Attempt == attempt {
					continue // its task runs: fine
				}
				state = string(t.State)
				if t.Attempt != attempt {
					state = fmt.Sprintf("on attempt %d", t.Attempt)
				}
			case !errors.Is(err, grove.ErrNotFound):
				continue
			}
		}
		orphans++
		pid := "?"
		if p, err := supervise.ReadProc(dir); err == nil {
			pid = strconv.Itoa(p.Pid)
		}
		rep.add("supervisors", checkProblem, "stop it (it stops its agent): kill -TERM "+pid,
			"supervisor pid %s of task %s attempt %s still runs, but the task is %s", pid, m[1], m[2], state)
	}
	if orphans == 0 {
		rep.add("supervisors", checkOK, "", "%d running, none orphaned", alive)
	}
}

func checkDisk(rep *doctorReport, home string) {
	dir := home
	for !fileExists(dir) && filepath.Dir(dir) != dir {
		dir = filepath.Dir(dir)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		rep.add("disk", checkProblem, "check that "+dir+" is readable", "cannot read free space of %s: %v", dir, err)
		return
	}
	free := fs.Bavail * uint64(fs.Bsize)
	if free < minFreeDisk {
		rep.add("disk", checkProblem, "free some space, or move --home to a bigger filesystem",
			"only %s free on the filesystem of %s (want 1 GiB)", humanBytes(free), dir)
		return
	}
	rep.add("disk", checkOK, "", "%s free on the filesystem of %s", humanBytes(free), dir)
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
