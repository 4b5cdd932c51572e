package gitops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grove-dev/grove"
)

// Renaming a branch in git's files backend without a git process.
//
// A warm claim renames its pool entry's branch to the task's, on the path
// from submit to the agent's start, and `git branch -m` costs about 20 ms
// there. renameBranchFiles writes what git 2.39's `branch -m` writes, run
// from the main worktree, for the one case a pool entry is in: a loose
// branch with a reflog, packed nowhere, without a config section, checked
// out in worktrees that have a HEAD reflog. It then moves the reflog to the
// new name and appends "Branch: renamed A to B" to it, writes the new ref,
// points every worktree HEAD on the branch at the new name (each HEAD's
// reflog gets "0000… <oid> Branch: renamed …", as git writes it), deletes
// the old ref and prunes the directories that left empty. It does not
// rewrite the config (git rewrites it with the same text when there is no
// section to rename). Every file is written under the lock file git uses
// for it (NAME.lock, created exclusively), so a concurrent git command
// (a user's pack-refs, gc) either waits for it or makes it step aside.
//
// Hooks play no part: grove runs every git command of this kind with
// core.hooksPath=/dev/null (git.go). Anything else (reftable, a packed or
// missing ref, a branch section in the config, a shared repository, the
// main worktree's branch, a lock held by someone) returns handled=false
// before writing anything, and the caller runs git.
//
// The writes go in this order: reflog, new ref, HEADs, old ref. Each lock
// file says whose it is, so the repeat of a rename a crash cut short
// (under the repository lock, which no live rename then holds) clears its
// own locks and finishes from wherever the dead one stopped.

// renameIdent is what git writes into a reflog entry before the old and
// new ids' message: the committer identity ("Name <email>"), and the time
// when GIT_COMMITTER_DATE fixes it ("1704067200 +0000"; empty: now). ok
// false means git must do the rename (a shared repository's permissions).
type renameIdent struct {
	ident, when string
	ok          bool
}

// stamp is the time of a reflog line written now: the fixed one, or now
// as git writes it ("1704067200 +0000").
func (ri renameIdent) stamp() string {
	if ri.when != "" {
		return ri.when
	}
	now := time.Now()
	return fmt.Sprintf("%d %s", now.Unix(), now.Format("-0700"))
}

var renameIdents sync.Map // key → renameIdent

// reflogIdent returns the identity (and fixed time, if any) git would
// write into a reflog in dir, asking git once per configuration and
// environment (`git var GIT_COMMITTER_IDENT`).
func reflogIdent(ctx context.Context, dir string) (renameIdent, bool) {
	key, cacheable := configDigest(dir)
	if !cacheable {
		return renameIdent{}, false
	}
	for _, k := range []string{"GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL", "GIT_COMMITTER_DATE"} {
		v, set := os.LookupEnv(k)
		key += fmt.Sprintf("\x00%v%s", set, v)
	}
	if v, ok := renameIdents.Load(key); ok {
		ri := v.(renameIdent)
		return ri, ri.ok
	}
	ri := renameIdent{}
	out, err := run(ctx, dir, "config", "--get-regexp", `^core\.sharedrepository$`)
	if err != nil && exitCode(err) != 1 {
		return ri, false // not cached: it may work next time
	}
	if len(bytes.TrimSpace(out)) == 0 {
		id, err := run(ctx, dir, "var", "GIT_COMMITTER_IDENT")
		if err != nil {
			return ri, false
		}
		// "Name <email> 1796032221 +0000"
		s := strings.TrimRight(string(id), "\n")
		if i := strings.LastIndexByte(s, '>'); i > 0 && !strings.ContainsAny(s, "\n") {
			ri = renameIdent{ident: s[:i+1], ok: true}
			if _, fixed := os.LookupEnv("GIT_COMMITTER_DATE"); fixed {
				ri.when = strings.TrimSpace(s[i+1:])
			}
		}
	}
	renameIdents.Store(key, ri)
	return ri, ri.ok
}

// PrepareRename asks git now what a rename in r's files needs from it (the
// reflog identity: two git processes, once per configuration), so that a
// later RenameBranch, on the path of a warm start, does not.
func (r *Repo) PrepareRename(ctx context.Context) { reflogIdent(ctx, r.Root) }

// renameBranchFiles renames refs/heads/<from> to refs/heads/<to> in
// r's files (see above); handled is false when git must do it, with
// nothing written. The caller holds the repository lock.
func (r *Repo) renameBranchFiles(ctx context.Context, from, to string) (handled bool, err error) {
	common := r.CommonDir
	oldRef, newRef := "refs/heads/"+from, "refs/heads/"+to
	if !plainRefPath(oldRef) || !plainRefPath(newRef) || usesReftable(common) ||
		strings.HasPrefix(newRef+"/", oldRef+"/") || strings.HasPrefix(oldRef+"/", newRef+"/") {
		return false, nil
	}
	ident, ok := reflogIdent(ctx, r.Root)
	if !ok {
		return false, nil
	}
	if cfg, err := os.ReadFile(filepath.Join(common, "config")); err != nil || bytes.Contains(cfg, []byte(`"`+from+`"`)) {
		return false, nil
	}
	oldPath, newPath := refPath(common, oldRef), refPath(common, newRef)
	oldLog, newLog := refPath(filepath.Join(common, "logs"), oldRef), refPath(filepath.Join(common, "logs"), newRef)
	packedPath := filepath.Join(common, "packed-refs")
	// Each lock file this rename makes says whose it is. One with this
	// rename's words was left by a rename of the same branches that died
	// midway (a live one would hold the repository lock, which the caller
	// holds): those are cleared first, and the state the dead one left is
	// finished below, or by git.
	marker := []byte("grove: rename " + oldRef + " to " + newRef + "\n")
	resuming := clearMarkedLocks(common, marker, oldPath, newPath, packedPath)
	if resuming {
		if _, err := os.Lstat(oldPath); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Lstat(newPath); err == nil {
				return true, nil // it died after the last step: done
			}
		}
	}
	p, ok := planRename(common, oldRef, newRef, resuming)
	if !ok {
		return false, nil
	}
	// Lock as git does (the refs, the HEADs, then packed-refs, which keeps
	// a running pack-refs from writing the old ref back; the new ref's
	// directories made first, and pruned again if the rename does not
	// happen), then look again: what was read must still hold.
	var locks []string // held lock files, removed on the way out
	done := false
	defer func() {
		for _, l := range locks {
			_ = os.Remove(l)
		}
		if !done {
			pruneEmptyParents(newPath, filepath.Join(common, "refs", "heads"))
			pruneEmptyParents(newLog, filepath.Join(common, "logs", "refs", "heads"))
		}
	}()
	lock := func(path string) bool {
		f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err != nil {
			return false
		}
		_, werr := f.Write(marker)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		locks = append(locks, path+".lock")
		return werr == nil
	}
	if os.MkdirAll(filepath.Dir(newPath), 0o777) != nil || (p.moveLog && os.MkdirAll(filepath.Dir(newLog), 0o777) != nil) {
		return false, nil // a file in the way: git says what it is
	}
	if !lock(oldPath) || !lock(newPath) {
		return false, nil
	}
	for _, h := range p.heads {
		if !lock(h.head) {
			return false, nil
		}
	}
	if !lock(packedPath) {
		return false, nil
	}
	if again, ok := planRename(common, oldRef, newRef, resuming); !ok || !again.same(p) {
		return false, nil
	}
	oid, heads := p.oid, p.heads

	// Checks done, locks held: write.
	when := ident.stamp()
	entry := func(old string) []byte {
		return fmt.Appendf(nil, "%s %s %s %s\tBranch: renamed %s to %s\n", old, oid, ident.ident, when, oldRef, newRef)
	}
	if p.moveLog {
		if err := os.Rename(oldLog, newLog); err != nil {
			return false, nil // nothing written: git says what is in the way
		}
	}
	done = true
	if p.moveLog || p.logEntry {
		if err := appendFile(newLog, entry(oid)); err != nil {
			return true, fmt.Errorf("rename branch %s: %w", from, err)
		}
	}
	grove.Failpoint("rename.after-log")
	if err := commitLock(newPath, []byte(oid+"\n")); err != nil {
		return true, fmt.Errorf("rename branch %s: %w", from, err)
	}
	grove.Failpoint("rename.after-new-ref")
	zero := strings.Repeat("0", len(oid))
	for _, h := range heads {
		if err := commitLock(h.head, []byte("ref: "+newRef+"\n")); err != nil {
			return true, fmt.Errorf("rename branch %s: %w", from, err)
		}
		if err := appendFile(h.log, entry(zero)); err != nil {
			return true, fmt.Errorf("rename branch %s: %w", from, err)
		}
	}
	grove.Failpoint("rename.after-heads")
	if err := os.Remove(oldPath); err != nil {
		return true, fmt.Errorf("rename branch %s: delete old ref: %w", from, err)
	}
	grove.Failpoint("rename.after-old-ref")
	for _, l := range locks {
		_ = os.Remove(l)
	}
	locks = nil
	for _, base := range []string{common, filepath.Join(common, "logs")} {
		pruneEmptyParents(refPath(base, oldRef), filepath.Join(base, "refs", "heads"))
	}
	return true, nil
}

// renamedBy reports whether the reflog at path ends with the entry of a
// rename of oldRef to newRef (a run cut short after moving it).
func renamedBy(path, oldRef, newRef string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.HasSuffix(b, []byte("\tBranch: renamed "+oldRef+" to "+newRef+"\n"))
}

// renamePlan is what a rename finds before it writes.
type renamePlan struct {
	oid      string   // the old ref's commit
	moveLog  bool     // its reflog is still to be moved
	logEntry bool     // the moved reflog still lacks the rename's entry
	heads    []headOn // the worktree HEADs on the old ref
}

func (p renamePlan) same(q renamePlan) bool {
	return p.oid == q.oid && p.moveLog == q.moveLog && p.logEntry == q.logEntry && slices.Equal(p.heads, q.heads)
}

// planRename reads what renaming oldRef to newRef in common's files
// would change, without writing; ok is false when git must do it.
// resuming says a rename of these branches died midway (its marked locks
// were found): its reflog may be moved already and its new ref written.
func planRename(common, oldRef, newRef string, resuming bool) (p renamePlan, ok bool) {
	b, err := readSmall(refPath(common, oldRef))
	if err != nil {
		return p, false
	}
	if p.oid, ok = oneObjectID(b); !ok {
		return p, false // a symref, or damage
	}
	newExists := false
	if b, err := readSmall(refPath(common, newRef)); err == nil {
		if have, ok := oneObjectID(b); !ok || have != p.oid {
			return p, false // another branch: git refuses
		}
		newExists = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return p, false
	}
	packed, perr := os.ReadFile(filepath.Join(common, "packed-refs"))
	for _, ref := range []string{oldRef, newRef} {
		if at, known := packedRef(packed, perr, ref); !known || at != "" {
			return p, false
		}
	}
	if packedClash(packed, newRef) {
		return p, false // a packed ref below or above the new name: git refuses
	}
	logs := filepath.Join(common, "logs")
	_, oldLogErr := os.Lstat(refPath(logs, oldRef))
	_, newLogErr := os.Lstat(refPath(logs, newRef))
	movedBy := newLogErr == nil && renamedBy(refPath(logs, newRef), oldRef, newRef)
	switch {
	case oldLogErr == nil && newLogErr == nil:
		return p, false // two reflogs: git decides
	case oldLogErr == nil && newExists && !resuming:
		return p, false // the new ref is another branch's (its log would be lost): git refuses
	case oldLogErr == nil:
		p.moveLog = true
	case errors.Is(oldLogErr, fs.ErrNotExist) && newLogErr == nil && (resuming || (newExists && movedBy)):
		p.logEntry = !movedBy // moved by the dead rename, maybe before its entry
	default:
		return p, false // no reflog to move, and not moved by a cut-short run
	}
	if p.heads, ok = headsOn(common, oldRef); !ok {
		return p, false
	}
	for _, h := range p.heads {
		if h.head == filepath.Join(common, "HEAD") {
			return p, false // git, run from there, also logs the old ref's deletion to that HEAD
		}
	}
	return p, true
}

// packedClash reports whether the packed-refs text b holds a ref below
// ref (ref/...) or one of ref's parents: names git refuses beside ref.
func packedClash(b []byte, ref string) bool {
	for line := range bytes.Lines(b) {
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 || line[0] == '#' || line[0] == '^' {
			continue
		}
		_, name, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			continue
		}
		n := string(name)
		if strings.HasPrefix(n, ref+"/") || strings.HasPrefix(ref, n+"/") {
			return true
		}
	}
	return false
}

// clearMarkedLocks removes the lock files that carry marker (left by a
// rename that died; see renameBranchFiles) at the given paths and at
// every worktree's HEAD, and reports whether there was any.
func clearMarkedLocks(common string, marker []byte, paths ...string) bool {
	gitDirs, _ := worktreeGitDirs(common) // unreadable: those HEADs are not cleared
	for _, gd := range gitDirs {
		paths = append(paths, filepath.Join(gd, "HEAD"))
	}
	found := false
	for _, p := range paths {
		if b, err := os.ReadFile(p + ".lock"); err == nil && bytes.Equal(b, marker) {
			if os.Remove(p+".lock") == nil {
				found = true
			}
		}
	}
	return found
}

// refPath is the file of ref under base (a common dir, or its logs dir).
func refPath(base, ref string) string { return filepath.Join(base, filepath.FromSlash(ref)) }

// headOn is a worktree HEAD file and its reflog.
type headOn struct{ head, log string }

// headsOn lists the HEADs (the main worktree's and each linked one's)
// that are the symbolic ref "ref: <ref>"; ok is false when one cannot be
// read exactly, or one on ref has no reflog.
func headsOn(common, ref string) ([]headOn, bool) {
	gitDirs, err := worktreeGitDirs(common)
	if err != nil {
		return nil, false
	}
	want := "ref: " + ref
	var on []headOn
	for _, gd := range gitDirs {
		b, err := readSmall(filepath.Join(gd, "HEAD"))
		if errors.Is(err, fs.ErrNotExist) && gd != common {
			continue // a half-made or half-pruned worktree: not checked out
		}
		if err != nil {
			return nil, false
		}
		if strings.TrimRight(string(b), "\n") != want {
			continue
		}
		if _, err := os.Lstat(filepath.Join(gd, "logs", "HEAD")); err != nil {
			return nil, false
		}
		on = append(on, headOn{head: filepath.Join(gd, "HEAD"), log: filepath.Join(gd, "logs", "HEAD")})
	}
	return on, true
}

// worktreeGitDirs lists the git dirs of the main worktree (common) and of
// every linked one (common/worktrees/<id>).
func worktreeGitDirs(common string) ([]string, error) {
	gitDirs := []string{common}
	ents, err := os.ReadDir(filepath.Join(common, "worktrees"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return gitDirs, err
	}
	for _, e := range ents {
		gitDirs = append(gitDirs, filepath.Join(common, "worktrees", e.Name()))
	}
	return gitDirs, nil
}

// commitLock replaces path with b while its lock file is held: written to
// path.grove.lock (a name git skips, as every *.lock) and renamed over it.
func commitLock(path string, b []byte) error {
	tmp := path + ".grove.lock"
	if err := os.WriteFile(tmp, b, 0o666); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// appendFile appends b to the existing file path.
func appendFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

// pruneEmptyParents removes the directories of path that are empty, from
// its parent up to (not including) stop, as git does after deleting a
// loose ref.
func pruneEmptyParents(path, stop string) {
	for d := filepath.Dir(path); d != stop && strings.HasPrefix(d, stop+string(filepath.Separator)); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			return
		}
	}
}
