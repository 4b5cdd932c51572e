package gitops

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/grove-dev/grove"
)

// Repo is a resolved repository. Safe for concurrent use.
type Repo struct {
	Root      string // absolute path of the MAIN worktree (even if opened from a linked worktree or subdir)
	CommonDir string // absolute git common dir
}

// Open resolves any path inside a work tree (main or linked worktree, any
// subdirectory) to its repository.
//
// It refuses, with a *grove.UserError wrapping grove.ErrBadRequest, a path that
// does not exist or is not a directory, a directory outside any git work
// tree, a bare repository, and a repository with no commits. Other git
// failures are returned wrapped.
func Open(ctx context.Context, path string) (*Repo, error) {
	r, _, err := OpenAtHead(ctx, path)
	return r, err
}

// MainHead is the main worktree's HEAD as Open saw it.
type MainHead struct {
	Known  bool   // false: not read (opened from a linked worktree, or HEAD is unusual); call Head
	Branch string // short name; "" when detached
	Commit string
}

// OpenAtHead is Open that also returns the main worktree's HEAD, read in
// the same git call when the path is inside the main worktree (what Head
// would return right now; saves a git process on submit).
func OpenAtHead(ctx context.Context, path string) (*Repo, MainHead, error) {
	var head MainHead
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, head, fmt.Errorf("open repo %s: %w", path, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, head, grove.Userf(grove.ErrBadRequest, "check the path, or pass --repo", "no such directory: %s", abs)
		}
		return nil, head, fmt.Errorf("open repo %s: %w", abs, err)
	}
	if !st.IsDir() {
		return nil, head, grove.Userf(grove.ErrBadRequest, "pass the directory of a git work tree", "not a directory: %s", abs)
	}
	if r, head, ok := openFromFiles(abs); ok {
		return r, head, nil
	}
	// One git call in the common case: discovery plus a commit at HEAD
	// (which proves the repository has commits). Anything unusual (no
	// HEAD commit, not a repository) takes the precise path below.
	hasHead := false
	out, err := run(ctx, abs, "rev-parse", "--path-format=absolute", "--git-common-dir", "--is-bare-repository", "--is-inside-work-tree", "HEAD^{commit}",
		"--git-dir", "--symbolic-full-name", "HEAD")
	if l := lines(out); err == nil && len(l) == 6 && len(l[3]) >= 40 {
		out, hasHead = []byte(strings.Join(l[:3], "\n")), true
		if l[4] == l[0] { // the git dir is the common dir: the main worktree
			if b, ok := strings.CutPrefix(l[5], "refs/heads/"); ok {
				head = MainHead{Known: true, Branch: b, Commit: l[3]}
			} else if l[5] == "HEAD" {
				head = MainHead{Known: true, Commit: l[3]}
			}
		}
	} else {
		out, err = run(ctx, abs, "rev-parse", "--path-format=absolute", "--git-common-dir", "--is-bare-repository", "--is-inside-work-tree")
	}
	if err != nil {
		s := stderrOf(err)
		switch {
		case strings.Contains(s, "not a git repository"):
			return nil, head, grove.Userf(grove.ErrBadRequest, "run grove inside a git work tree, or pass --repo", "not a git repository: %s", abs)
		case strings.Contains(s, "dubious ownership"):
			return nil, head, grove.Userf(grove.ErrBadRequest, "if you trust it: git config --global --add safe.directory "+abs,
				"repository is owned by someone else: %s", abs)
		}
		return nil, head, fmt.Errorf("open repo %s: %w", abs, err)
	}
	l := lines(out)
	if len(l) != 3 {
		return nil, head, fmt.Errorf("open repo %s: unexpected rev-parse output %q", abs, out)
	}
	common, bare := l[0], l[1] == "true"
	if bare {
		return nil, head, grove.Userf(grove.ErrBadRequest, "grove needs a work tree; clone it or add one with git worktree add", "bare repository: %s", abs)
	}
	if c, err := filepath.EvalSymlinks(common); err == nil {
		common = c
	}
	r := &Repo{CommonDir: common}
	r.Root, err = mainWorktree(ctx, abs, common, l[2] == "true")
	if err != nil {
		return nil, head, err
	}
	if c, err := filepath.EvalSymlinks(r.Root); err == nil {
		r.Root = c
	}
	ok := hasHead
	if !ok {
		ok, err = r.hasCommits(ctx)
	}
	if err != nil {
		return nil, head, fmt.Errorf("open repo %s: %w", abs, err)
	}
	if !ok {
		return nil, head, grove.Userf(grove.ErrBadRequest, "make a first commit, then submit again", "repository has no commits: %s", r.Root)
	}
	return r, head, nil
}

// mainWorktree finds the main worktree of the repository whose common dir
// is common, from dir inside one of its worktrees.
func mainWorktree(ctx context.Context, dir, common string, inWorkTree bool) (string, error) {
	if filepath.Base(common) == ".git" {
		return filepath.Dir(common), nil
	}
	// A separate git dir (git init --separate-git-dir, submodules): only the
	// main worktree itself knows where it is, unless core.worktree says.
	if inWorkTree {
		out, err := run(ctx, dir, "rev-parse", "--path-format=absolute", "--git-dir", "--show-toplevel")
		if err != nil {
			return "", fmt.Errorf("open repo %s: %w", dir, err)
		}
		if l := lines(out); len(l) == 2 && samePath(l[0], common) {
			return l[1], nil
		}
	}
	out, err := run(ctx, common, "config", "--path", "--get", "core.worktree")
	if err == nil && trim(out) != "" {
		wt := trim(out)
		if !filepath.IsAbs(wt) {
			wt = filepath.Join(common, wt)
		}
		return filepath.Clean(wt), nil
	} else if err != nil && exitCode(err) != 1 {
		return "", fmt.Errorf("open repo %s: %w", dir, err)
	}
	if out, err := run(ctx, common, "config", "--bool", "--get", "core.bare"); err == nil && trim(out) == "true" {
		return "", grove.Userf(grove.ErrBadRequest, "grove needs a work tree; clone it or add one with git worktree add", "bare repository: %s", common)
	}
	return "", grove.Userf(grove.ErrBadRequest, "run grove in the main worktree of this repository",
		"cannot find the main worktree of %s", dir)
}

// hasCommits reports whether HEAD or any branch points at a commit.
func (r *Repo) hasCommits(ctx context.Context) (bool, error) {
	if _, err := run(ctx, r.Root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"); err == nil {
		return true, nil
	} else if exitCode(err) != 1 {
		return false, err
	}
	out, err := run(ctx, r.Root, "for-each-ref", "--count=1", "--format=%(objectname)", "refs/heads", "refs/remotes")
	if err != nil {
		return false, err
	}
	return trim(out) != "", nil
}

// CurrentBranch is the branch checked out in the main worktree (short
// name, e.g. "main"), or "" if its HEAD is detached.
func (r *Repo) CurrentBranch(ctx context.Context) (string, error) {
	out, err := run(ctx, r.Root, "symbolic-ref", "--quiet", "HEAD")
	if err != nil {
		if exitCode(err) == 1 {
			return "", nil
		}
		return "", fmt.Errorf("current branch of %s: %w", r.Root, err)
	}
	return strings.TrimPrefix(trim(out), "refs/heads/"), nil
}

// Head reads the main worktree's HEAD in one git call: its branch (short
// name, "" when detached) and its commit. An unborn HEAD is an error.
func (r *Repo) Head(ctx context.Context) (branch, commit string, err error) {
	out, err := run(ctx, r.Root, "rev-parse", "HEAD^{commit}", "--symbolic-full-name", "HEAD")
	l := lines(out)
	if err != nil || len(l) != 2 {
		return "", "", fmt.Errorf("read HEAD of %s: %w", r.Root, cmp.Or(err, fmt.Errorf("unexpected output %q", out)))
	}
	if l[1] != "HEAD" {
		b, ok := strings.CutPrefix(l[1], "refs/heads/")
		if !ok {
			return "", "", fmt.Errorf("read HEAD of %s: HEAD is %s", r.Root, l[1])
		}
		branch = b
	}
	return branch, l[0], nil
}

// DefaultBranch is the branch tasks land on by default: the branch checked
// out in the main worktree; if that is detached, the target of
// refs/remotes/origin/HEAD (as a local branch name); else "main" or
// "master", whichever exists. If none applies it returns a
// *grove.UserError (ErrBadRequest).
func (r *Repo) DefaultBranch(ctx context.Context) (string, error) {
	cur, err := r.CurrentBranch(ctx)
	if err != nil || cur != "" {
		return cur, err
	}
	out, err := run(ctx, r.Root, "symbolic-ref", "--quiet", "refs/remotes/origin/HEAD")
	switch {
	case err == nil:
		target := trim(out)
		b, ok := strings.CutPrefix(target, "refs/remotes/origin/")
		if c, err := r.RefCommit(ctx, target); err != nil {
			return "", fmt.Errorf("default branch of %s: %w", r.Root, err)
		} else if ok && b != "" && c != "" {
			return b, nil
		}
	case exitCode(err) != 1 && exitCode(err) != 128:
		return "", fmt.Errorf("default branch of %s: %w", r.Root, err)
	}
	for _, b := range []string{"main", "master"} {
		ok, err := r.IsLocalBranch(ctx, b)
		if err != nil {
			return "", fmt.Errorf("default branch of %s: %w", r.Root, err)
		}
		if ok {
			return b, nil
		}
	}
	return "", grove.Userf(grove.ErrBadRequest, "check out a branch in "+r.Root+", or name the target branch",
		"cannot tell the default branch of %s", r.Root)
}

// ResolveCommit resolves rev (any revision git understands) to a full
// commit SHA. An unknown or hostile rev gives a *grove.UserError
// (ErrBadRequest) "unknown base: REV"; rev is never read as an option.
func (r *Repo) ResolveCommit(ctx context.Context, rev string) (string, error) {
	unknown := grove.Userf(grove.ErrBadRequest, fmt.Sprintf("check the name with git rev-parse %s, or omit --base", quoteArg(rev)), "unknown base: %s", rev)
	if rev == "" || strings.HasPrefix(rev, "-") || strings.ContainsAny(rev, "\x00\n") {
		return "", unknown
	}
	if typ, known := looseObjectType(r.CommonDir, rev); known && typ == "commit" {
		return rev, nil // a full id of a commit stored loose: no git needed
	}
	out, err := run(ctx, r.Root, "rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}")
	if err != nil {
		if exitCode(err) == 1 || exitCode(err) == 128 {
			return "", unknown
		}
		return "", fmt.Errorf("resolve %s: %w", rev, err)
	}
	return trim(out), nil
}

// quoteArg quotes s for a hint line when it has characters a shell would
// treat specially.
func quoteArg(s string) string {
	if s != "" && strings.IndexFunc(s, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./@^~:", c))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// IsLocalBranch reports whether refs/heads/<name> exists.
func (r *Repo) IsLocalBranch(ctx context.Context, name string) (bool, error) {
	c, err := r.RefCommit(ctx, "refs/heads/"+name)
	return c != "", err
}

// CheckBranchName validates name as a new branch name with
// `git check-ref-format --branch`. A bad name gives a *grove.UserError
// (ErrBadRequest). Names git would expand (like @{-1}) are refused.
func CheckBranchName(ctx context.Context, name string) error {
	bad := grove.Userf(grove.ErrBadRequest, "use letters, digits and - _ / . (see git check-ref-format)", "invalid branch name: %q", name)
	if name == "" || name == "HEAD" || name == "@" || strings.HasPrefix(name, "-") || strings.ContainsAny(name, "\x00\n") {
		return bad
	}
	if plainBranchName(name) {
		return nil // valid under every rule of check-ref-format: no git process
	}
	out, err := run(ctx, os.TempDir(), "check-ref-format", "--branch", name)
	if err != nil {
		if exitCode(err) == 128 || exitCode(err) == 1 {
			return bad
		}
		return fmt.Errorf("check branch name %q: %w", name, err)
	}
	if trim(out) != name {
		return bad
	}
	return nil
}

// plainBranchName reports whether name is made only of '/'-separated
// non-empty components of ASCII letters, digits, '_' and '-' (not leading
// with '-'), like grove's own grove/<id>/work: a subset of what
// check-ref-format accepts (no '.', '@', control or special character can
// break a rule), so it needs no git process. Anything else goes to git.
func plainBranchName(name string) bool {
	for _, comp := range strings.Split(name, "/") {
		if comp == "" || comp[0] == '-' || comp == "HEAD" {
			return false
		}
		for i := 0; i < len(comp); i++ {
			c := comp[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validRefName is a cheap filter for full ref names we look up or set:
// under refs/, and free of revision syntax, globs and control characters
// (none of which a real ref can contain).
func validRefName(ref string) bool {
	if !strings.HasPrefix(ref, "refs/") || strings.Contains(ref, "..") || strings.Contains(ref, "@{") ||
		strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, ".lock") {
		return false
	}
	return strings.IndexFunc(ref, func(c rune) bool {
		return c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c)
	}) < 0
}

// RefCommit returns the commit the full ref (e.g. "refs/heads/x") points
// at, peeling tags, or "" if the ref does not exist (or is no valid ref
// name, or does not point at a commit).
//
// Branches (refs/heads/*) and grove's own refs (refs/grove/*) are read
// from the ref files when that answer is exact (refs_files.go): git only
// ever writes commits there (update-ref refuses anything else for a
// branch, and grove writes commits), so the object's type is not looked
// up again. Other refs, and those the files cannot answer, ask git.
func (r *Repo) RefCommit(ctx context.Context, ref string) (string, error) {
	if !validRefName(ref) {
		return "", nil
	}
	if strings.HasPrefix(ref, "refs/heads/") || strings.HasPrefix(ref, "refs/grove/") {
		if oid, known := filesRef(r.CommonDir, ref); known {
			return oid, nil
		}
	}
	// for-each-ref matches whole path components and never reads its
	// argument as a revision; refs/x and refs/x/y cannot both exist.
	out, err := run(ctx, r.Root, "for-each-ref", "--format=%(refname) %(objecttype) %(objectname) %(*objecttype) %(*objectname)", "--", ref)
	if err != nil {
		return "", fmt.Errorf("read ref %s: %w", ref, err)
	}
	for _, l := range lines(out) {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != ref {
			continue
		}
		switch {
		case f[1] == "commit":
			return f[2], nil
		case len(f) == 5 && f[3] == "commit":
			return f[4], nil
		}
	}
	return "", nil
}

// SetRef points ref at sha, whatever it pointed at before (no
// compare-and-swap); used for grove's own refs such as
// refs/grove/tasks/<id>. Transient lock failures are retried.
func (r *Repo) SetRef(ctx context.Context, ref, sha string) error {
	if !validRefName(ref) {
		return fmt.Errorf("set ref %q: invalid ref name", ref)
	}
	if sha == "" || strings.HasPrefix(sha, "-") {
		return fmt.Errorf("set ref %s: invalid object %q", ref, sha)
	}
	if err := retry(ctx, func() error { return updateRefs(ctx, r.CommonDir, "grove", "update "+ref+" "+sha) }); err != nil {
		return fmt.Errorf("set ref %s: %w", ref, err)
	}
	return nil
}

// deleteRef deletes ref if it still points at old (compare-and-swap).
func (r *Repo) deleteRef(ctx context.Context, ref, old string) error {
	cmd := "delete " + ref
	if old != "" {
		cmd += " " + old
	}
	if err := retry(ctx, func() error { return updateRefs(ctx, r.CommonDir, "grove", cmd) }); err != nil {
		return fmt.Errorf("delete ref %s: %w", ref, err)
	}
	return nil
}
