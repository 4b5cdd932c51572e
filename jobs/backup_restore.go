package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
)

// RestoredBackup is what RestoreFromBackup brought back.
type RestoredBackup struct {
	ID     string             `json:"id"`
	Path   string             `json:"path"`
	Branch string             `json:"branch"`
	From   gitops.BackupEntry `json:"from"` // the backed-up ref restored
	Ref    string             `json:"ref"`  // where it was fetched to here
	Notes  []string           `json:"notes,omitempty"`
}

// RestoreFromBackup brings task (or session-<id>, ws-<id>) id back from a
// backup into a new worktree of the repository at repoDir (any clone of
// the one backed up): it finds the id's refs on source (a remote that
// grove backup --to wrote, or a directory grove backup --bundle wrote:
// its bundles are checked and unbundled first), fetches them (Repo.FetchBackup: the newest
// snapshot wins, else the change) and restores a snapshot bit-exact
// (gitops.RestoreWith) or checks the change out, at path ("" =
// <repository>-<id> next to the repository) on branch grove/<id>/work
// (-restored if taken). box, when set, picks one box's backup. An id the
// source does not hold, a path that exists and is not empty, and a
// source that is no repository or cannot be reached are
// *grove.UserErrors.
func RestoreFromBackup(ctx context.Context, d *Deps, repoDir, source, id, box, path string) (RestoredBackup, error) {
	out := RestoredBackup{ID: id}
	if id == "" || strings.ContainsAny(id, "/ \t\n") || strings.HasPrefix(id, "-") {
		return out, grove.Userf(grove.ErrUsage, "give a task id as grove ls shows it", "bad id %q", id)
	}
	repo, err := d.Repo(ctx, repoDir)
	if err != nil {
		return out, err
	}
	var (
		src     string // "" for a bundle directory: the objects are unbundled here
		refs    map[string]string
		entries []gitops.BackupEntry
	)
	if isBundleDir(source) {
		// Checked before unbundling anything: a path that is in the way.
		if err := restorePathFree(path, repo.Root+"-"+id); err != nil {
			return out, err
		}
		if entries, refs, err = unbundleFor(ctx, repo, source, id, box); err != nil {
			return out, err
		}
	} else {
		if src, err = gitops.NormalizeRemote(source); err != nil {
			return out, err
		}
		if refs, err = gitops.RemoteRefs(ctx, repo.Root, src, gitops.BackupRefsRoot); err != nil {
			return out, err
		}
		entries = filterBox(gitops.BackupEntries(refs, id), box)
	}
	if len(entries) == 0 {
		return out, grove.Userf(grove.ErrNotFound, "check the id (grove ls on the box it ran on) and the backup's address",
			"%s holds no backup of %s", source, id)
	}
	if path == "" {
		path = repo.Root + "-" + id
	}
	if out.Path, err = filepath.Abs(path); err != nil {
		return out, fmt.Errorf("restore %s: %w", id, err)
	}
	if err := restorePathFree(out.Path, ""); err != nil {
		return out, err
	}
	if out.From, out.Ref, err = repo.FetchBackup(ctx, src, id, entries); err != nil {
		return out, err
	}
	if out.Branch, err = freeBranch(ctx, repo, TaskBranch(id)); err != nil {
		return out, err
	}
	if out.From.Kind == gitops.BackupChange {
		err = repo.CreateWorktree(ctx, out.Path, out.Branch, out.Ref)
	} else {
		out.Notes, err = repo.RestoreWith(ctx, out.Ref, out.Path, out.Branch)
	}
	if err != nil {
		return out, err
	}
	ns := gitops.BackupRefsRoot + out.From.Box + "/" + out.From.Repo + "/"
	n, err := repo.RestoreStashes(ctx, src, ns, refs, TaskBranch(id), out.Path)
	if err != nil {
		return out, fmt.Errorf("restore %s: worktree restored at %s, but its stash entries not: %w", id, out.Path, err)
	}
	if n > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d stash entr%s made on %s restored (git stash list)", n, map[bool]string{true: "y", false: "ies"}[n == 1], TaskBranch(id)))
	}
	msg := fmt.Sprintf("%s restored from %s (%s) at %s on %s", id, source, out.From.Name, out.Path, out.Branch)
	if err := d.Store.AddEvent(ctx, "", "", "backup_restored", msg); err != nil {
		d.Logger.Warn("record restore event", "err", err)
	}
	return out, nil
}

// restorePathFree refuses a restore path (path, else def) that exists and
// is not empty.
func restorePathFree(path, def string) error {
	if path == "" {
		path = def
	}
	if ents, err := os.ReadDir(path); err == nil && len(ents) > 0 {
		return grove.Userf(grove.ErrConflict, "pick another place with --path DIR", "%s already exists and is not empty", path)
	}
	return nil
}
