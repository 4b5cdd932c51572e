package gitops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/grove-dev/grove"
)

// Fallback identity for commits when the repository configures none.
const (
	fallbackName  = "grove"
	fallbackEmail = "grove@localhost"
)

// identityArgs returns -c options giving git an identity when dir's
// configuration lacks user.name or user.email. GIT_AUTHOR_* and
// GIT_COMMITTER_* in the environment still take precedence, as in git.
//
// The answer is cached by the exact text of every configuration file git
// would read in dir (and the configuration environment), so an edit to
// any of them asks git again; configuration with includes is never
// cached (an include can depend on the branch).
func identityArgs(ctx context.Context, dir string) ([]string, error) {
	key, cacheable := configDigest(dir)
	if cacheable {
		if v, ok := identityCache.Load(key); ok {
			return v.([]string), nil
		}
	}
	out, err := run(ctx, dir, "config", "--get-regexp", `^user\.(name|email)$`)
	if err != nil && exitCode(err) != 1 {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	var hasName, hasEmail bool
	for _, l := range lines(out) {
		k, v, _ := strings.Cut(l, " ")
		switch {
		case k == "user.name" && strings.TrimSpace(v) != "":
			hasName = true
		case k == "user.email" && strings.TrimSpace(v) != "":
			hasEmail = true
		}
	}
	args := []string{}
	if !hasName {
		args = append(args, "-c", "user.name="+fallbackName)
	}
	if !hasEmail {
		args = append(args, "-c", "user.email="+fallbackEmail)
	}
	args = slices.Clip(args) // callers append: never into a shared array
	if cacheable {
		identityCache.Store(key, args)
	}
	return args, nil
}

// identityCache maps configDigest to identityArgs' answer (a few entries:
// one per distinct set of configuration texts).
var identityCache sync.Map

// configDigest is a digest of the text of every configuration source git
// reads in dir
// (system, global, repository, worktree, and the environment that
// changes them); ok is false when one cannot be read exactly or uses
// includes.
func configDigest(dir string) (key string, ok bool) {
	gitDir := filepath.Join(dir, ".git")
	if st, err := os.Stat(gitDir); err != nil {
		return "", false
	} else if !st.IsDir() {
		if gitDir, err = GitDirOf(dir); err != nil {
			return "", false
		}
	}
	common := gitDir
	if b, err := os.ReadFile(filepath.Join(gitDir, "commondir")); err == nil {
		c := strings.TrimRight(string(b), "\r\n")
		if !filepath.IsAbs(c) {
			c = filepath.Join(gitDir, c)
		}
		common = c
	}
	home, _ := os.UserHomeDir()
	xdg := os.Getenv("XDG_CONFIG_HOME")
	if xdg == "" && home != "" {
		xdg = filepath.Join(home, ".config")
	}
	files := []string{filepath.Join(common, "config"), filepath.Join(gitDir, "config.worktree")}
	if g, set := os.LookupEnv("GIT_CONFIG_GLOBAL"); set {
		files = append(files, g)
	} else {
		files = append(files, filepath.Join(xdg, "git", "config"), filepath.Join(home, ".gitconfig"))
	}
	if os.Getenv("GIT_CONFIG_NOSYSTEM") == "" {
		sys := os.Getenv("GIT_CONFIG_SYSTEM")
		if sys == "" {
			sys = "/etc/gitconfig"
		}
		files = append(files, sys)
	}
	var b strings.Builder
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_CONFIG") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			b.WriteString(kv)
			b.WriteByte(0)
		}
	}
	// By position and text, not path: every worktree has its own
	// (usually absent) config.worktree, and the answer depends only on
	// what the files say (includes, which could depend on paths, are
	// never cached).
	for i, f := range files {
		text, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", false
		}
		if bytes.Contains(bytes.ToLower(text), []byte("include")) {
			return "", false
		}
		fmt.Fprintf(&b, "%d\x00%d\x00%s\x00", i, len(text), text)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return string(sum[:]), true
}

// CommitAll stages everything in the worktree at wtPath (`add -A`) and, if
// that leaves anything staged, commits it with hooks and signing off,
// using the repository's user.name/user.email or else
// "grove <grove@localhost>". It returns HEAD afterwards: the unchanged HEAD
// when there was nothing to commit. Commits the agent made itself are kept
// as they are. An empty message becomes "grove: work in progress".
//
// The commit is tried at once (an agent's worktree usually holds
// changes): only when it fails does `diff-index` tell "nothing staged"
// (no commit needed) from a failed commit (its error). A worktree in the
// middle of a merge is asked first, as a commit there would conclude the
// merge even with nothing staged.
func (r *Repo) CommitAll(ctx context.Context, wtPath, message string) (head string, err error) {
	if strings.TrimSpace(message) == "" {
		message = "grove: work in progress"
	}
	if _, err := runRetry(ctx, wtPath, "add", "-A"); err != nil {
		return "", fmt.Errorf("stage %s: %w", wtPath, err)
	}
	staged := func() (bool, error) {
		_, err := run(ctx, wtPath, "diff-index", "--cached", "--quiet", "--no-ext-diff", "--ignore-submodules=none", "HEAD", "--")
		if exitCode(err) == 1 {
			return true, nil
		}
		return false, err
	}
	if gd, err := GitDirOf(wtPath); err != nil || exists(filepath.Join(gd, "MERGE_HEAD")) {
		some, err := staged()
		if err != nil {
			return "", fmt.Errorf("commit %s: %w", wtPath, err)
		}
		if !some {
			return r.headAfterCommit(ctx, wtPath)
		}
	}
	id, err := identityArgs(ctx, wtPath)
	if err != nil {
		return "", fmt.Errorf("commit %s: %w", wtPath, err)
	}
	args := append(id, "-c", "commit.gpgSign=false", "commit", "--no-verify", "--no-edit", "-q",
		"--cleanup=whitespace", "--allow-empty-message", "-m", message)
	if _, cerr := runRetry(ctx, wtPath, args...); cerr != nil {
		some, err := staged()
		switch {
		case err != nil:
			return "", fmt.Errorf("commit %s: %w", wtPath, err)
		case some: // the commit failed
			return "", fmt.Errorf("commit %s: %w", wtPath, cerr)
		} // nothing staged: nothing to commit
	}
	return r.headAfterCommit(ctx, wtPath)
}

// headAfterCommit is HEAD of the worktree at wtPath.
func (r *Repo) headAfterCommit(ctx context.Context, wtPath string) (string, error) {
	if info, known := r.worktreeInfoFiles(wtPath); known {
		return info.head, nil
	}
	out, err := run(ctx, wtPath, "rev-parse", "--verify", "HEAD")
	if err != nil {
		return "", fmt.Errorf("commit %s: %w", wtPath, err)
	}
	return trim(out), nil
}

// checkRev refuses revisions that are empty or could be read as options.
func checkRev(rev string) error {
	if rev == "" || strings.HasPrefix(rev, "-") || strings.ContainsAny(rev, "\x00\n") {
		return fmt.Errorf("invalid revision %q", rev)
	}
	return nil
}

// diffArgs make diff-tree output independent of the user's configuration.
var diffArgs = []string{"-c", "core.quotePath=false", "-c", "diff.noprefix=false", "-c", "color.ui=never",
	"diff-tree", "-r", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/"}

// Diff returns the patch from base to head (commits or trees):
// `diff-tree -r -p --binary --full-index -M`, plumbing, with color,
// external diff drivers, textconv and prefixes pinned so a hostile user
// configuration cannot change it. `git apply` accepts the result.
func (r *Repo) Diff(ctx context.Context, base, head string) ([]byte, error) {
	if err := checkRev(base); err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	if err := checkRev(head); err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	args := append(append([]string{}, diffArgs...), "-p", "--binary", "--full-index", "-M", "--end-of-options", base, head)
	out, err := run(ctx, r.Root, args...)
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", base, head, err)
	}
	return out, nil
}

// DiffStat returns one grove.FileChange per changed file from base to
// head, with rename detection (-M). Binary files count -1 added and -1
// deleted. Paths are raw bytes as git stores them (no quoting).
func (r *Repo) DiffStat(ctx context.Context, base, head string) ([]grove.FileChange, error) {
	if err := checkRev(base); err != nil {
		return nil, fmt.Errorf("diff stat: %w", err)
	}
	if err := checkRev(head); err != nil {
		return nil, fmt.Errorf("diff stat: %w", err)
	}
	// One process: raw records (":..." status + paths) first, then numstat
	// records in the same order.
	args := append(append([]string{}, diffArgs...), "-M", "--raw", "--numstat", "-z", "--end-of-options", base, head)
	out, err := run(ctx, r.Root, args...)
	if err != nil {
		return nil, fmt.Errorf("diff stat %s..%s: %w", base, head, err)
	}
	files, err := parseRawNumstat(out)
	if err != nil {
		return nil, fmt.Errorf("diff stat %s..%s: %w", base, head, err)
	}
	return files, nil
}

func parseRawNumstat(out []byte) ([]grove.FileChange, error) {
	f := strings.Split(string(out), "\x00")
	var files []grove.FileChange
	i := 0
	// Raw: ":<mode> <mode> <sha> <sha> <status>\0<path>\0[<path>\0]"
	for i < len(f) && strings.HasPrefix(f[i], ":") {
		meta := strings.Fields(f[i])
		if len(meta) != 5 || i+1 >= len(f) {
			return nil, fmt.Errorf("bad raw record %q", f[i])
		}
		st := meta[4]
		fc := grove.FileChange{Status: st[:1]}
		if st[0] == 'R' || st[0] == 'C' {
			if i+2 >= len(f) {
				return nil, fmt.Errorf("bad raw record %q", f[i])
			}
			fc.OldPath, fc.Path = f[i+1], f[i+2]
			i += 3
		} else {
			fc.Path = f[i+1]
			i += 2
		}
		files = append(files, fc)
	}
	// Numstat: "<added>\t<deleted>\t<path>\0" or, for renames,
	// "<added>\t<deleted>\t\0<old>\0<new>\0".
	for n := range files {
		if i >= len(f) {
			return nil, fmt.Errorf("missing numstat for %s", files[n].Path)
		}
		parts := strings.SplitN(f[i], "\t", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("bad numstat record %q", f[i])
		}
		if parts[2] == "" {
			i += 3
		} else {
			i++
		}
		files[n].Added = numstatCount(parts[0])
		files[n].Deleted = numstatCount(parts[1])
	}
	return files, nil
}

func numstatCount(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1 // "-": binary
	}
	return n
}
