package gitops

// Creating a worktree on a new branch, idempotently and crash-safely.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grove-dev/grove"
)

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

	err = retry(ctx, func() error { return updateRefs(ctx, r.CommonDir, "grove: create branch", "create "+ref+" "+baseSHA) })
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
	var fast bool
	for try := 0; ; try++ {
		if err := clearRemnants(path); err != nil {
			return fmt.Errorf("add worktree %s: %w", path, err)
		}
		fast, err = r.addWorktreeFiles(ctx, path, branch, baseSHA) // worktree_register.go
		// A half-made admin dir that a concurrent `git worktree prune`
		// removed (git's own race; see transient): once more.
		if !fast || !errors.Is(err, fs.ErrNotExist) || try == 2 {
			break
		}
	}
	if err != nil { // (a failed registration leaves nothing to undo)
		return fmt.Errorf("add worktree %s: %w", path, err)
	}
	if !fast {
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
	}
	*createdWT = true
	grove.Failpoint("create.after-worktree-add")
	return nil
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
