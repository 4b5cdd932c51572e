package gitops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
// through symlinks, also when it does not exist (any more): git records a
// worktree by its real path, which a path through a symlinked parent (a
// $GROVE_HOME reached through a symlink) must still match once the
// directory is gone.
func samePath(a, b string) bool {
	a, b = filepath.Clean(a), filepath.Clean(b)
	return a == b || realPath(a) == realPath(b)
}

// realPath is filepath.EvalSymlinks for a path that may not exist: its
// longest existing prefix is resolved, a symlink whose target is missing
// is followed, and the missing rest is kept as it is.
func realPath(p string) string { return realPathN(filepath.Clean(p), 0) }

func realPathN(p string, depth int) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	parent := filepath.Dir(p)
	if parent == p || depth > 40 { // the root, or a symlink loop
		return p
	}
	q := filepath.Join(realPathN(parent, depth+1), filepath.Base(p))
	if target, err := os.Readlink(q); err == nil {
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(q), target)
		}
		return realPathN(filepath.Clean(target), depth+1)
	}
	return q
}

// gone reports whether nothing is at p, following symlinks (a symlink to
// a missing directory is gone too).
func gone(p string) bool {
	_, err := os.Stat(p)
	return errors.Is(err, os.ErrNotExist)
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
		// Registered, but its directory is gone (crash, or rm -rf): drop
		// that record, and only that one.
		if err := r.forgetWorktree(ctx, mine); err != nil {
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
	grove.Failpoint("create.after-branch")

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
	grove.Failpoint("create.after-worktree-add")
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

// GitDirOf returns the git dir of the linked worktree at path by reading
// its .git file.
func GitDirOf(path string) (string, error) {
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
	gd, err := GitDirOf(path)
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
	grove.Failpoint("create.after-checkout")
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
			} else if err := r.forgetPath(ctx, path); err != nil {
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
// It is NOT a removal path: it deletes, with no trash copy. grove's
// removals go through Retire (or RetireWorktree), which calls it only as
// the fallback when the trash is on another filesystem than the worktree
// (the gate's answer alone) and for a path git does not record as a
// linked worktree.
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
// It is idempotent: a registered worktree whose directory is gone loses
// its record (that one only: other missing worktrees, such as a user's on
// a disk not mounted, keep theirs; a locked one is refused with
// ErrAtRisk), a path that is no worktree is left alone, and a missing
// branch is fine. It refuses to delete a branch checked out in another
// worktree (*grove.UserError, ErrConflict) and to remove the main
// worktree. It does NOT run the at-risk gate: callers run AtRisk first.
func (r *Repo) RemoveWorktree(ctx context.Context, path, branch string) error {
	path, err := absPath(path)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if branch != "" && !validRefName("refs/heads/"+branch) {
		return grove.Userf(grove.ErrUsage, "", "invalid branch name: %q", branch)
	}
	refused, err := r.removeLocked(ctx, path, branch, 0, nil)
	if err != nil || refused == "" {
		return err
	}
	// Outside the lock (a snapshot-sized job): may we force it?
	force, err := r.forceLevel(ctx, path, refused)
	if err != nil {
		return err
	}
	refused, err = r.removeLocked(ctx, path, branch, force, nil)
	if err == nil && refused != "" {
		err = fmt.Errorf("remove worktree %s: git refused even with --force: %s", path, refused)
	}
	return err
}

// RetireWorktree is Retire for callers written before the trash kept
// entries: with a safe report it is Retire; with a report that is not
// safe it is Retire with Force when a snapshot under refs/grove/snapshots/
// records the worktree exactly as it is (Snapshot, then RetireWorktree, is
// how a forced removal was done), and RemoveWorktree otherwise (which
// refuses what it may not force); a missing directory is Retire's
// missing case. New code calls Retire.
func (r *Repo) RetireWorktree(ctx context.Context, path, branch, trashDir string, rep Report) error {
	abs, err := absPath(path)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	safe := rep.Safe && rep.Head != "" && samePath(rep.Path, abs) && (branch == "" || rep.Branch == branch)
	opt := RetireOptions{Manifest: TrashManifest{Reason: "remove"}}
	if !safe && !gone(abs) {
		covered, err := r.SnapshotCovers(ctx, abs)
		if err != nil || covered == "" {
			return r.RemoveWorktree(ctx, path, branch)
		}
		opt.Force = true
	}
	_, err = r.Retire(ctx, path, branch, trashDir, rep, opt)
	return err
}

// retireTarget resolves the worktree at abs for RetireWorktree: its real
// directory, the path git records for it (exactly as git worktree list
// shows it) and its administrative dir. ok is false when abs is not a
// linked worktree of r that git records at its real path.
func (r *Repo) retireTarget(abs string) (real, recorded, adminDir string, ok bool) {
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", "", "", false
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return "", "", "", false
	}
	gd, err := GitDirOf(real) // fails for the main worktree (.git is a directory)
	if err != nil || !samePath(filepath.Dir(gd), filepath.Join(r.CommonDir, "worktrees")) {
		return "", "", "", false
	}
	recorded, err = recordedPath(gd)
	if err != nil || !samePath(recorded, real) {
		return "", "", "", false
	}
	return real, recorded, gd, true
}

// recordedPath reads the path git records for the linked worktree whose
// administrative dir is gd (its gitdir file, read as git reads it).
func recordedPath(gd string) (string, error) {
	b, err := os.ReadFile(filepath.Join(gd, "gitdir"))
	if err != nil {
		return "", err
	}
	p := strings.TrimSuffix(strings.TrimRight(string(b), " \t\n\r\v\f"), "/.git")
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s/gitdir: not an absolute path: %q", gd, p)
	}
	return p, nil
}

// recheckMoved runs the at-risk gate's checks of the worktree itself on
// the worktree just moved to dir (its .git file still names its git dir
// gitDir by absolute path, so git works there), with the options rep
// records, and checks that its HEAD and rep.Branch are where the gate saw
// them. Anything found is a *grove.UserError wrapping grove.ErrAtRisk; a
// check that cannot run is one too (fail closed).
func (r *Repo) recheckMoved(ctx context.Context, path, dir, gitDir string, rep Report) error {
	rs := newRiskSet()
	var changed []string
	// Processes first: the git commands below run inside dir themselves.
	if !rep.skipProcs {
		checkProcesses(dir, rs)
	}
	stashBranch := rep.Branch
	out, err := run(ctx, dir, "rev-parse", "--path-format=absolute", "--git-dir", "HEAD", "--symbolic-full-name", "HEAD")
	l := lines(out)
	switch {
	case err != nil:
		rs.gitErr("inspect moved worktree", err)
	case len(l) != 3:
		rs.gitErr("inspect moved worktree", fmt.Errorf("unexpected rev-parse output %q", out))
	case !samePath(l[0], gitDir):
		rs.gitErr("inspect moved worktree", fmt.Errorf("its git dir is %s, not %s", l[0], gitDir))
	default:
		if l[1] != rep.Head {
			changed = append(changed, fmt.Sprintf("HEAD moved from %s to %s", shortSHA(rep.Head), shortSHA(l[1])))
		}
		if b, ok := strings.CutPrefix(l[2], "refs/heads/"); ok && stashBranch == "" {
			stashBranch = b
		}
		var wg sync.WaitGroup
		r.checkTree(ctx, &wg, dir, gitDir, stashBranch, rep.keep, false, true, rs)
		wg.Wait()
	}
	if rep.Branch != "" {
		tip, err := r.RefCommit(ctx, "refs/heads/"+rep.Branch)
		switch {
		case err != nil:
			rs.gitErr("read branch", err)
		case tip != rep.BranchTip:
			changed = append(changed, fmt.Sprintf("branch %s moved from %s to %s", rep.Branch, shortSHA(rep.BranchTip), shortSHA(tip)))
		}
	}
	for _, risk := range rs.risks() {
		s := risk.Reason
		if risk.Detail != "" {
			s += " (" + risk.Detail + ")"
		}
		changed = append(changed, s)
	}
	if len(changed) == 0 {
		return nil
	}
	return grove.Userf(grove.ErrAtRisk, "run the removal again: the at-risk gate judges it as it is now",
		"worktree %s not removed: it changed after the at-risk gate judged it: %s", path, strings.Join(changed, "; "))
}

func shortSHA(s string) string {
	if s == "" {
		return "(none)"
	}
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// removeExpect is the state RetireWorktree requires of the worktree it
// removes: what the at-risk gate judged.
type removeExpect struct {
	head string // the worktree's HEAD commit
	tip  string // the branch's tip; "" if it did not exist
}

// removeLocked is the locked part of RemoveWorktree: `worktree remove`
// with force times -f (0, 1 or 2). When git refuses for a reason forcing
// would override, it returns that refusal (git's message) and nothing
// else was changed.
//
// With want (RetireWorktree: path is the recorded path of a worktree
// already moved away), the worktree must be registered with HEAD at
// want.head and the branch must point at want.tip, else it refuses
// (ErrAtRisk) before changing anything; the branch is then deleted with a
// compare-and-swap against want.tip rather than its current tip.
func (r *Repo) removeLocked(ctx context.Context, path, branch string, force int, want *removeExpect) (refused string, err error) {
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
	ref := "refs/heads/" + branch
	if want != nil {
		if mine == nil {
			return "", fmt.Errorf("remove worktree %s: git no longer records it as a worktree", path)
		}
		if mine.Head != want.head {
			return "", grove.Userf(grove.ErrAtRisk, "run the removal again: the at-risk gate judges it as it is now",
				"worktree %s not removed: its HEAD moved from %s to %s after the at-risk gate judged it", path, shortSHA(want.head), shortSHA(mine.Head))
		}
		if branch != "" {
			tip, err := r.RefCommit(ctx, ref)
			if err != nil {
				return "", fmt.Errorf("remove worktree %s: %w", path, err)
			}
			if tip != want.tip {
				return "", grove.Userf(grove.ErrAtRisk, "run the removal again: the at-risk gate judges it as it is now",
					"worktree %s not removed: branch %s moved from %s to %s after the at-risk gate judged it", path, branch, shortSHA(want.tip), shortSHA(tip))
			}
		}
	}
	if mine != nil {
		if mine == &wts[0] || samePath(mine.Path, r.Root) {
			return "", fmt.Errorf("remove worktree %s: refusing to remove the main worktree", path)
		}
		switch {
		case gone(mine.Path):
			if err := r.forgetWorktree(ctx, mine); err != nil {
				return "", fmt.Errorf("remove worktree %s: %w", path, err)
			}
		case want != nil:
			return "", fmt.Errorf("remove worktree %s: something is at its path again", path)
		default:
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
	var tip string
	if want != nil {
		tip = want.tip
	} else if tip, err = r.RefCommit(ctx, ref); err != nil {
		return "", err
	}
	if tip == "" {
		return "", nil
	}
	return "", r.deleteRef(ctx, ref, tip)
}

// forgetPath removes git's record of the worktree registered at path,
// whose directory is gone, if there is one. Called under the lock.
func (r *Repo) forgetPath(ctx context.Context, path string) error {
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return err
	}
	for i := range wts {
		if i > 0 && samePath(wts[i].Path, path) {
			return r.forgetWorktree(ctx, &wts[i])
		}
	}
	return nil
}

// forgetWorktree removes git's record of the registered worktree w, whose
// directory is gone, and nothing else. `git worktree prune` would drop
// the record of every worktree whose directory is missing, a user's on a
// disk that is not mounted too, and with it that worktree's HEAD, index
// and detached commits. A locked worktree is refused (*grove.UserError,
// ErrAtRisk). Called under the repository lock.
//
// When nothing is at w.Path, `git worktree remove -- <path>` does it (on
// git 2.39, for a missing directory it deletes only that worktree's
// administrative dir, and it refuses a locked one); when something is
// there (a directory without its .git file) or git fails, exactly that
// administrative dir is deleted, found through its gitdir file. Nothing
// at w.Path is ever deleted.
func (r *Repo) forgetWorktree(ctx context.Context, w *WorktreeEntry) error {
	locked := func() error {
		return grove.Userf(grove.ErrAtRisk, "if it is gone for good: git worktree unlock "+quoteArg(w.Path),
			"worktree %s is locked: its record is kept though its directory is missing", w.Path)
	}
	if w.Locked {
		return locked()
	}
	var gitErr error
	if _, err := os.Lstat(w.Path); errors.Is(err, os.ErrNotExist) {
		_, err := runRetry(ctx, r.Root, "worktree", "remove", "--", w.Path)
		if err == nil {
			return nil
		}
		if forceable(err) == refusedLocked {
			return locked()
		}
		gitErr = err
	}
	gd, err := r.adminDirOf(w.Path)
	switch {
	case err != nil:
		return fmt.Errorf("forget worktree %s: %w", w.Path, errors.Join(gitErr, err))
	case gd == "" && gitErr != nil:
		return fmt.Errorf("forget worktree %s: %w", w.Path, gitErr)
	case gd == "":
		return nil // no record left
	case exists(filepath.Join(gd, "locked")):
		return locked()
	}
	if err := os.RemoveAll(gd); err != nil {
		return fmt.Errorf("forget worktree %s: %w", w.Path, err)
	}
	return nil
}

// adminDirOf returns the administrative dir ($GIT_COMMON_DIR/worktrees/<id>)
// of the linked worktree git records at path, or "" if there is none.
func (r *Repo) adminDirOf(path string) (string, error) {
	base := filepath.Join(r.CommonDir, "worktrees")
	ents, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range ents {
		gd := filepath.Join(base, e.Name())
		if !e.IsDir() {
			continue
		}
		p, err := recordedPath(gd)
		if err == nil && samePath(p, path) {
			found = append(found, gd)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d administrative dirs record %s: %s", len(found), path, strings.Join(found, ", "))
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
	gd, err := GitDirOf(path)
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
