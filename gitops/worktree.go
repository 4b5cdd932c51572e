package gitops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grove-dev/grove"
)

// WorktreeEntry is one entry of `git worktree list --porcelain -z`.
type WorktreeEntry struct {
	Path     string // absolute, as git records it
	Head     string // commit SHA; "" for a bare entry or an unborn branch
	Branch   string // short branch name ("main", not "refs/heads/main"); "" if detached or bare
	Bare     bool
	Detached bool
	Locked   bool
	Prunable bool // git considers it stale (typically: its directory is gone)
}

// Worktrees lists the repository's worktrees, the main worktree first.
func (r *Repo) Worktrees(ctx context.Context) ([]WorktreeEntry, error) {
	// From the main worktree: git knows its path there even when the git
	// dir lives elsewhere (--separate-git-dir).
	out, err := run(ctx, r.Root, "worktree", "list", "--porcelain", "-z")
	if err != nil {
		return nil, fmt.Errorf("list worktrees: %w", err)
	}
	var list []WorktreeEntry
	var cur *WorktreeEntry
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			cur = nil
			continue
		}
		key, val, _ := strings.Cut(f, " ")
		if key == "worktree" {
			list = append(list, WorktreeEntry{Path: val})
			cur = &list[len(list)-1]
			continue
		}
		if cur == nil {
			continue
		}
		switch key {
		case "HEAD":
			cur.Head = val
		case "branch":
			cur.Branch = strings.TrimPrefix(val, "refs/heads/")
		case "bare":
			cur.Bare = true
		case "detached":
			cur.Detached = true
		case "locked":
			cur.Locked = true
		case "prunable":
			cur.Prunable = true
		}
	}
	return list, nil
}

// absPath makes p absolute and clean.
func absPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	return filepath.Abs(p)
}

// samePath reports whether a and b name the same directory, directly or
// through symlinks.
func samePath(a, b string) bool {
	a, b = filepath.Clean(a), filepath.Clean(b)
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// CreateWorktree makes a worktree at path on a NEW branch (short name)
// starting at base (any revision; resolved to a commit first).
//
// Under the repository lock it creates refs/heads/<branch> with a
// create-only update-ref and registers the worktree with
// `worktree add --no-checkout`; outside the lock it fills the files with
// `read-tree --reset -u HEAD` (one process: writes the index and the files;
// it measured no slower than reset --hard or checkout and does least work).
//
// It is idempotent and safe to call again after a crash at any point: a
// branch that already exists is accepted when path is already its worktree
// or when it still points at base (left by an earlier attempt); a path
// already registered on branch is kept; a worktree whose files were never
// filled is filled. A branch that exists elsewhere, is checked out in
// another worktree, or a path registered on another branch give a
// *grove.UserError wrapping grove.ErrConflict. On failure it removes the
// worktree and branch this call created, so nothing stray is left.
func (r *Repo) CreateWorktree(ctx context.Context, path, branch, base string) error {
	return r.createWorktree(ctx, path, branch, base, func(ctx context.Context, path string, _ bool) error {
		return populate(ctx, path)
	})
}

// createWorktree is CreateWorktree with fill doing the unlocked part (fresh
// tells whether this call registered the worktree).
func (r *Repo) createWorktree(ctx context.Context, path, branch, base string,
	fill func(ctx context.Context, path string, fresh bool) error) (err error) {
	path, err = absPath(path)
	if err != nil {
		return fmt.Errorf("add worktree %s: %w", path, err)
	}
	if err := CheckBranchName(ctx, branch); err != nil {
		return err
	}
	baseSHA, err := r.ResolveCommit(ctx, base)
	if err != nil {
		return err
	}
	ref := "refs/heads/" + branch
	var createdBranch, createdWT bool
	defer func() {
		if err == nil || (!createdBranch && !createdWT) {
			return
		}
		if cerr := r.undoCreate(ctx, path, ref, baseSHA, createdWT, createdBranch); cerr != nil {
			err = fmt.Errorf("%w (cleanup: %v)", err, cerr)
		}
	}()

	if err := r.registerWorktree(ctx, path, branch, baseSHA, &createdBranch, &createdWT); err != nil {
		return err
	}
	if err := fill(ctx, path, createdWT); err != nil {
		return fmt.Errorf("fill worktree %s: %w", path, err)
	}
	return nil
}

// registerWorktree is the locked part of CreateWorktree.
func (r *Repo) registerWorktree(ctx context.Context, path, branch, baseSHA string, createdBranch, createdWT *bool) error {
	unlock, err := r.Lock(ctx)
	if err != nil {
		return fmt.Errorf("add worktree %s: %w", path, err)
	}
	defer unlock()
	ref := "refs/heads/" + branch

	wts, err := r.Worktrees(ctx)
	if err != nil {
		return fmt.Errorf("add worktree %s: %w", path, err)
	}
	var mine *WorktreeEntry
	for i := range wts {
		w := &wts[i]
		if samePath(w.Path, path) {
			mine = w
		} else if w.Branch == branch {
			return grove.Userf(grove.ErrConflict, "pick another branch name", "branch %s is already checked out at %s", branch, w.Path)
		}
	}
	if mine != nil && (mine.Prunable || !exists(filepath.Join(path, ".git"))) {
		// Registered, but its directory is gone (crash, or rm -rf).
		if _, err := runRetry(ctx, r.CommonDir, "worktree", "prune"); err != nil {
			return fmt.Errorf("add worktree %s: %w", path, err)
		}
		mine = nil
	}
	if mine != nil && mine.Branch != branch {
		return grove.Userf(grove.ErrConflict, "pick another path", "%s is already a worktree on %s", path, describeHead(mine))
	}

	_, err = runRetry(ctx, r.Root, "update-ref", "-m", "grove: create branch", "--end-of-options", ref, baseSHA, "")
	switch {
	case err == nil:
		*createdBranch = true
	case strings.Contains(stderrOf(err), "reference already exists"):
		if mine == nil {
			tip, err := r.RefCommit(ctx, ref)
			if err != nil {
				return fmt.Errorf("add worktree %s: %w", path, err)
			}
			if tip != baseSHA {
				return grove.Userf(grove.ErrConflict, "pick another name, or delete it with git branch -D "+quoteArg(branch),
					"branch already exists: %s", branch)
			}
		}
	default:
		return fmt.Errorf("create branch %s: %w", branch, err)
	}

	if mine != nil {
		return nil
	}
	err = retry(ctx, func() error {
		if err := clearRemnants(path); err != nil {
			return err
		}
		_, err := run(ctx, r.Root, "worktree", "add", "--no-checkout", "--", path, branch)
		return err
	})
	if err != nil {
		return fmt.Errorf("add worktree %s: %w", path, err)
	}
	*createdWT = true
	return nil
}

func describeHead(w *WorktreeEntry) string {
	if w.Branch != "" {
		return "branch " + w.Branch
	}
	return "a detached HEAD"
}

// clearRemnants removes what a killed `worktree add` may leave at path: an
// empty directory is fine as it is; a directory holding only a .git file
// loses the file. Anything else is left for git to refuse.
func clearRemnants(path string) error {
	ents, err := os.ReadDir(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if len(ents) == 1 && ents[0].Name() == ".git" && ents[0].Type().IsRegular() {
		return os.Remove(filepath.Join(path, ".git"))
	}
	return nil
}

// gitDirOf returns the git dir of the linked worktree at path by reading
// its .git file.
func gitDirOf(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(path, ".git"))
	if err != nil {
		return "", err
	}
	d, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: ")
	if !ok {
		return "", fmt.Errorf("%s/.git: not a gitdir file", path)
	}
	if !filepath.IsAbs(d) {
		d = filepath.Join(path, d)
	}
	return filepath.Clean(d), nil
}

// populate fills the files of a worktree added with --no-checkout, unless
// that was done already (its index exists).
func populate(ctx context.Context, path string) error {
	gd, err := gitDirOf(path)
	if err != nil {
		return err
	}
	if exists(filepath.Join(gd, "index")) {
		return nil
	}
	// --reset also overwrites files a killed earlier populate left behind.
	if _, err := runRetry(ctx, path, "read-tree", "--reset", "-u", "HEAD"); err != nil {
		return err
	}
	return nil
}

// undoCreate removes the worktree and branch a failed CreateWorktree made.
// It runs even when ctx is done.
func (r *Repo) undoCreate(ctx context.Context, path, ref, baseSHA string, wt, branch bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	unlock, err := r.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	if wt {
		// Only files we checked out live there: --force is safe.
		if _, err := runRetry(ctx, r.Root, "worktree", "remove", "--force", "--", path); err != nil {
			if rerr := os.RemoveAll(path); rerr != nil {
				errs = append(errs, rerr)
			}
			if _, err := runRetry(ctx, r.CommonDir, "worktree", "prune"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if branch {
		if err := r.deleteRef(ctx, ref, baseSHA); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveWorktree removes the worktree at path and deletes
// refs/heads/<branch> (compare-and-swap against its current value), both
// under the repository lock. branch may be "" to keep every branch.
//
// It tries plain `git worktree remove` first. When git refuses — modified
// or untracked files, a worktree lock, an initialised submodule — it
// removes with --force only when nothing is lost by it: the worktree is
// clean apart from clean submodules and not locked, or a snapshot under
// refs/grove/snapshots/ records its current state exactly (see
// SnapshotCovers; Snapshot first, then RemoveWorktree, is how a forced
// removal is done). A submodule with changes or new commits is never
// forced, since no snapshot holds them. A refusal is a *grove.UserError
// wrapping grove.ErrAtRisk, with the worktree untouched. Ignored files go
// with the worktree either way, as with plain git: the gate judges them.
//
// It is idempotent: a registered worktree whose directory is gone is
// pruned, a path that is no worktree is left alone, and a missing branch
// is fine. It refuses to delete a branch checked out in another worktree
// (*grove.UserError, ErrConflict) and to remove the main worktree.
// It does NOT run the at-risk gate: callers run AtRisk first.
func (r *Repo) RemoveWorktree(ctx context.Context, path, branch string) error {
	path, err := absPath(path)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if branch != "" && !validRefName("refs/heads/"+branch) {
		return grove.Userf(grove.ErrUsage, "", "invalid branch name: %q", branch)
	}
	refused, err := r.removeLocked(ctx, path, branch, 0)
	if err != nil || refused == "" {
		return err
	}
	// Outside the lock (a snapshot-sized job): may we force it?
	force, err := r.forceLevel(ctx, path, refused)
	if err != nil {
		return err
	}
	refused, err = r.removeLocked(ctx, path, branch, force)
	if err == nil && refused != "" {
		err = fmt.Errorf("remove worktree %s: git refused even with --force: %s", path, refused)
	}
	return err
}

// RetireWorktree removes a worktree that the at-risk gate has just judged
// safe (rep.Safe, rep.Path the same directory) while holding the repository
// lock only for git's bookkeeping: the directory is renamed into trashDir
// (same filesystem, atomic), git's record of it is pruned and its branch
// deleted under the lock, and the files are deleted after the lock is
// released. `git worktree remove` would hold the lock while it re-runs a
// full status and deletes every file (about a second at 100k files),
// stalling every task start on the repository meanwhile.
//
// Without a safe report for path, or when the rename is not possible
// (trashDir on another filesystem), it is RemoveWorktree. A crash after the
// rename leaves a missing worktree (which RemoveWorktree prunes) and a
// directory in trashDir (which SweepTrash deletes).
func (r *Repo) RetireWorktree(ctx context.Context, path, branch, trashDir string, rep Report) error {
	abs, err := absPath(path)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if !rep.Safe || !samePath(rep.Path, abs) || !exists(abs) {
		return r.RemoveWorktree(ctx, path, branch)
	}
	if err := os.MkdirAll(trashDir, 0o700); err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	trash, err := os.MkdirTemp(trashDir, filepath.Base(abs)+"-")
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	moved := filepath.Join(trash, "wt")
	if err := os.Rename(abs, moved); err != nil {
		_ = os.Remove(trash)
		return r.RemoveWorktree(ctx, path, branch)
	}
	if err := r.RemoveWorktree(ctx, abs, branch); err != nil {
		// Put it back: the worktree stays as it was, registered.
		if rerr := os.Rename(moved, abs); rerr != nil {
			return fmt.Errorf("%w (and moving it back from %s failed: %v)", err, moved, rerr)
		}
		_ = os.Remove(trash)
		return err
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("delete retired worktree %s: %w", trash, err)
	}
	return nil
}

// SweepTrash deletes what RetireWorktree left in trashDir after a crash.
func SweepTrash(trashDir string) error {
	ents, err := os.ReadDir(trashDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, os.RemoveAll(filepath.Join(trashDir, e.Name())))
	}
	return errors.Join(errs...)
}

// removeLocked is the locked part of RemoveWorktree: `worktree remove`
// with force times -f (0, 1 or 2). When git refuses for a reason forcing
// would override, it returns that refusal (git's message) and nothing
// else was changed.
func (r *Repo) removeLocked(ctx context.Context, path, branch string, force int) (refused string, err error) {
	unlock, err := r.Lock(ctx)
	if err != nil {
		return "", fmt.Errorf("remove worktree %s: %w", path, err)
	}
	defer unlock()
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return "", fmt.Errorf("remove worktree %s: %w", path, err)
	}
	var mine *WorktreeEntry
	for i := range wts {
		w := &wts[i]
		if samePath(w.Path, path) {
			mine = w
		} else if branch != "" && w.Branch == branch {
			return "", grove.Userf(grove.ErrConflict, "", "branch %s is checked out at %s", branch, w.Path)
		}
	}
	if mine != nil {
		if mine == &wts[0] || samePath(mine.Path, r.Root) {
			return "", fmt.Errorf("remove worktree %s: refusing to remove the main worktree", path)
		}
		if !exists(path) {
			if _, err := runRetry(ctx, r.CommonDir, "worktree", "prune"); err != nil {
				return "", fmt.Errorf("prune worktree %s: %w", path, err)
			}
		} else {
			args := []string{"worktree", "remove"}
			for range force {
				args = append(args, "--force")
			}
			if _, err := runRetry(ctx, r.Root, append(args, "--", mine.Path)...); err != nil {
				if why := forceable(err); why != "" {
					return why, nil
				}
				return "", fmt.Errorf("remove worktree %s: %w", path, err)
			}
		}
	}
	if branch == "" {
		return "", nil
	}
	ref := "refs/heads/" + branch
	tip, err := r.RefCommit(ctx, ref)
	if err != nil || tip == "" {
		return "", err
	}
	return "", r.deleteRef(ctx, ref, tip)
}

// Why `git worktree remove` refused, for the refusals --force overrides.
const (
	refusedChanges    = "changes"
	refusedLocked     = "locked"
	refusedSubmodules = "submodules"
)

func forceable(err error) string {
	s := stderrOf(err)
	switch {
	case strings.Contains(s, "locked working tree"):
		return refusedLocked
	case strings.Contains(s, "contains modified or untracked files"):
		return refusedChanges
	case strings.Contains(s, "containing submodules"):
		return refusedSubmodules
	}
	return ""
}

// forceLevel decides whether a worktree git refused to remove may be
// removed with --force (1) or --force --force (2, locked), or returns why
// not (*grove.UserError, ErrAtRisk).
func (r *Repo) forceLevel(ctx context.Context, path, refused string) (int, error) {
	force := 1
	gd, err := gitDirOf(path)
	if err != nil {
		return 0, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	locked := exists(filepath.Join(gd, "locked"))
	if locked || refused == refusedLocked {
		force = 2
	}
	out, err := run(ctx, path, "--no-optional-locks", "status", "--porcelain=v2", "-z", "-uall", "--no-renames", "--ignore-submodules=none")
	if err != nil {
		return 0, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	clean := true
	for _, e := range fields0(out) {
		if len(e) < 2 {
			continue
		}
		p := strings.SplitN(e, " ", 4)
		if (e[0] == '1' || e[0] == '2') && len(p) == 4 && strings.HasPrefix(p[2], "S") && p[2] != "S..." {
			return 0, grove.Userf(grove.ErrAtRisk, "commit and push its work, or remove it by hand",
				"worktree %s not removed: a submodule has changes or commits a snapshot cannot keep", path)
		}
		if e[0] != '#' {
			clean = false
		}
	}
	if clean && !locked {
		return force, nil // only clean submodules stood in the way
	}
	covered, err := r.SnapshotCovers(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if covered == "" {
		return 0, grove.Userf(grove.ErrAtRisk, "snapshot it first (grove close --force does)",
			"worktree %s not removed: it holds changes no snapshot records", path)
	}
	return force, nil
}

// GC runs `git gc --quiet` on the repository under the repository lock, so
// it cannot race a worktree being added (gc reads every worktree's HEAD and
// prunes worktrees). Run outside the lock, gc fails or prunes on a
// half-made worktree. Another gc already running (gc.pid) counts as
// success.
func (r *Repo) GC(ctx context.Context) error {
	unlock, err := r.Lock(ctx)
	if err != nil {
		return fmt.Errorf("gc %s: %w", r.Root, err)
	}
	defer unlock()
	if _, err := runRetry(ctx, r.Root, "gc", "--quiet"); err != nil && !strings.Contains(stderrOf(err), "gc is already running") {
		return fmt.Errorf("gc %s: %w", r.Root, err)
	}
	return nil
}
