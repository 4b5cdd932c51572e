package gitops

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/grove-dev/grove"
)

// What a backed-up ref of an id holds.
const (
	BackupSnapshot = "snapshot" // refs/grove/snapshots/<id>: a forced close's snapshot
	BackupLive     = "live"     // live/<id>: a snapshot an at-risk worktree got at backup time
	BackupChange   = "change"   // refs/grove/tasks/<id>: the task's change (a commit)
)

// BackupEntry is one ref of a backup that holds an id.
type BackupEntry struct {
	Name string `json:"name"` // the full ref name in the backup
	SHA  string `json:"sha"`
	Box  string `json:"box"`
	Repo string `json:"repo"` // the repository key (RepoKey)
	Kind string `json:"kind"` // BackupSnapshot, BackupLive or BackupChange
}

// backupKinds maps the part of a backed-up ref after its namespace, minus
// the id, to its kind.
var backupKinds = map[string]string{
	backupLocalPart + "snapshots/": BackupSnapshot,
	backupLivePart:                 BackupLive,
	backupLocalPart + "tasks/":     BackupChange,
}

// BackupEntries picks, out of refs (full name → object, as RemoteRefs
// lists them under BackupRefsRoot), the ones that hold id, of any box and
// repository, sorted by name.
func BackupEntries(refs map[string]string, id string) []BackupEntry {
	var out []BackupEntry
	for name, sha := range refs {
		rest, ok := strings.CutPrefix(name, BackupRefsRoot)
		if !ok {
			continue
		}
		f := strings.SplitN(rest, "/", 3)
		if len(f) != 3 {
			continue
		}
		for part, kind := range backupKinds {
			if f[2] == part+id {
				out = append(out, BackupEntry{Name: name, SHA: sha, Box: f[0], Repo: f[1], Kind: kind})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// RestoredRef is where FetchBackup puts a fetched entry of id here.
func RestoredRef(kind, id string) string { return "refs/grove/restored/" + kind + "/" + id }

// FetchBackup fetches the entries (from BackupEntries, all of one id) from
// source (a remote; "" when their objects are here already, e.g.
// unbundled) into refs/grove/restored/<kind>/<id>
// and returns the one to restore: the newest snapshot (forced close or
// live, by commit time), else the change. Entries of several boxes or
// repositories are ambiguous: a *grove.UserError naming them.
func (r *Repo) FetchBackup(ctx context.Context, source, id string, entries []BackupEntry) (BackupEntry, string, error) {
	if len(entries) == 0 {
		return BackupEntry{}, "", fmt.Errorf("fetch backup of %s: nothing to fetch", id)
	}
	for _, e := range entries[1:] {
		if e.Box != entries[0].Box || e.Repo != entries[0].Repo {
			return BackupEntry{}, "", grove.Userf(grove.ErrConflict, "choose one with --box BOX",
				"%s is backed up from two places: %s/%s and %s/%s", id, entries[0].Box, entries[0].Repo, e.Box, e.Repo)
		}
	}
	var specs []string
	for _, e := range entries {
		local := RestoredRef(e.Kind, id)
		if !validRefName(local) || !validRefName(e.Name) {
			return BackupEntry{}, "", fmt.Errorf("fetch backup of %s: invalid ref %q", id, e.Name)
		}
		specs = append(specs, "+"+e.Name+":"+local)
	}
	if err := r.fetchOrSet(ctx, source, specs, entriesRefs(entries)); err != nil {
		return BackupEntry{}, "", fmt.Errorf("fetch backup of %s: %w", id, err)
	}
	best, bestTime := -1, int64(-1)
	for i, e := range entries {
		if e.Kind == BackupChange {
			continue
		}
		t, err := r.commitTime(ctx, RestoredRef(e.Kind, id))
		if err != nil {
			return BackupEntry{}, "", fmt.Errorf("fetch backup of %s: %w", id, err)
		}
		if t > bestTime || (t == bestTime && e.Kind == BackupSnapshot) {
			best, bestTime = i, t
		}
	}
	if best < 0 {
		best = 0 // only the change
	}
	return entries[best], RestoredRef(entries[best].Kind, id), nil
}

// commitTime is the committer time (Unix seconds) of the commit ref names.
func (r *Repo) commitTime(ctx context.Context, ref string) (int64, error) {
	out, err := run(ctx, r.Root, "log", "-1", "--format=%ct", "--end-of-options", ref)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(trim(out), 10, 64)
}

// RestoreStashes brings back, into the worktree at wt, the stash entries
// made on branch that the backup namespace ns of source ("": objects
// here already) holds (refs,
// from RemoteRefs, list them): fetched under refs/grove/restored/stash/
// and stored with `git stash store`, oldest first, so `git stash list`
// shows them as they were (refs/stash is shared by the repository's
// worktrees). It returns how many it stored.
func (r *Repo) RestoreStashes(ctx context.Context, source, ns string, refs map[string]string, branch, wt string) (int, error) {
	var args []string
	for name, sha := range refs {
		if strings.HasPrefix(name, ns+backupStashPart) && checkRev(sha) == nil && validRefName(name) {
			args = append(args, "+"+name+":refs/grove/restored/stash/"+sha)
		}
	}
	if len(args) == 0 {
		return 0, nil
	}
	sort.Strings(args)
	if err := r.fetchOrSet(ctx, source, args, refs); err != nil {
		return 0, fmt.Errorf("fetch stashes: %w", err)
	}
	out, err := run(ctx, r.Root, "for-each-ref", "--sort=committerdate", "--format=%(objectname)%00%(subject)", "refs/grove/restored/stash/")
	if err != nil {
		return 0, fmt.Errorf("list stashes: %w", err)
	}
	have, err := r.stashCommits(ctx)
	if err != nil {
		return 0, fmt.Errorf("list stashes: %w", err)
	}
	n := 0
	for _, l := range lines(out) {
		sha, subject, ok := strings.Cut(l, "\x00")
		if !ok || !(strings.HasPrefix(subject, "WIP on "+branch+": ") || strings.HasPrefix(subject, "On "+branch+": ")) {
			continue
		}
		if slices.Contains(have, sha) {
			continue // already there (restored before)
		}
		if _, err := run(ctx, wt, "stash", "store", "-m", subject, "--end-of-options", sha); err != nil {
			return n, fmt.Errorf("store stash %s: %w", shortSHA(sha), err)
		}
		n++
	}
	return n, nil
}

// fetchOrSet fetches refspecs ("+<remote ref>:<local ref>") from source,
// or, when source is "" (the objects are here already), sets each local
// ref to the object refs (remote name → object) names for its remote ref.
func (r *Repo) fetchOrSet(ctx context.Context, source string, refspecs []string, refs map[string]string) error {
	if source != "" {
		args := append([]string{"-c", "protocol.file.allow=always", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
			"--no-recurse-submodules", "--end-of-options", source}, refspecs...)
		if _, err := run(ctx, r.Root, args...); err != nil {
			return remoteError(source, err)
		}
		return nil
	}
	for _, rs := range refspecs {
		from, to, ok := strings.Cut(strings.TrimPrefix(rs, "+"), ":")
		sha := refs[from]
		if !ok || sha == "" {
			return fmt.Errorf("no object for %s", from)
		}
		if err := r.SetRef(ctx, to, sha); err != nil {
			return err
		}
	}
	return nil
}

// entriesRefs maps the entries' names to their objects.
func entriesRefs(entries []BackupEntry) map[string]string {
	m := map[string]string{}
	for _, e := range entries {
		m[e.Name] = e.SHA
	}
	return m
}
