package gitops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/grove-dev/grove"
)

// Backups are pushes. Each repository's grove refs go to one remote under
// a namespace of their own:
//
//	refs/grove-backup/<box>/<repo-key>/refs/grove/...   every local refs/grove/* ref, same name below
//	refs/grove-backup/<box>/<repo-key>/live/<id>        a snapshot of an at-risk worktree taken for the backup
//	refs/grove-backup/<box>/<repo-key>/stash/<commit>   every stash entry (refs/stash and its reflog)
//
// <box> names the machine (its host name unless told otherwise) and
// <repo-key> the repository on it (RepoKey: its directory name and a hash
// of its path), so several boxes and repositories share one remote and
// nothing outside refs/grove-backup/<box>/<repo-key>/ is ever written.
// A backup pushes only refs that are new or moved, with explicit refspecs
// (never --mirror, never --prune): a ref deleted here (retention, a
// purge) stays on the remote. Moved refs are forced: a snapshot retaken
// under the same name replaces the remote's copy.
const BackupRefsRoot = "refs/grove-backup/"

// backupLivePart is the namespace part holding live snapshots.
const backupLivePart = "live/"

// backupLocalPart is the namespace part holding copies of refs/grove/*.
const backupLocalPart = "refs/grove/"

// The catalog: git sends, for a push or a bundle, the objects its tips
// reach minus those reachable from the remote's tips, but it marks as
// already there only the trees of the remote's commits that are parents
// of what it sends ("edges"). Snapshots are siblings (each one's parent
// is a worktree's HEAD, not the previous snapshot), so without help
// every new snapshot would send every file again. Each backup that sends
// anything therefore also sends
//
//	<ns>catalog        a parentless commit whose tree holds the tree of
//	                   every backed-up ref (entries named by tree id)
//	<ns>catalog-edge   the same tree, its parent the previous catalog
//
// The previous catalog is then an edge, its tree (every file backed up
// before) counts as on the remote, and only new files are sent. This box
// keeps the last catalog it sent to a target at
// refs/grove/backup/<hash of target and namespace> (not itself backed up).
const (
	catalogPart     = "catalog"
	catalogEdgePart = "catalog-edge"
	// CatalogRefPrefix holds the last catalog sent to each target.
	CatalogRefPrefix = "refs/grove/backup/"
)

// catalogRef is where this box keeps the catalog last sent to target
// under namespace ns.
func catalogRef(target, ns string) string {
	sum := sha256.Sum256([]byte(target + "\x00" + ns))
	return CatalogRefPrefix + hex.EncodeToString(sum[:8])
}

// catalog makes the catalog commits for plan (want: every ref the
// backup holds after it, have: what the target has) and returns them as
// refs to send.
func (r *Repo) catalog(ctx context.Context, plan BackupPlan, want map[string]BackupRef, have map[string]string) ([]BackupRef, error) {
	var in strings.Builder
	for _, ref := range want {
		in.WriteString(ref.New + "^{tree}\n")
	}
	out, err := runGit(ctx, r.Root, nil, strings.NewReader(in.String()), "cat-file", "--batch-check=%(objectname) %(objecttype)")
	if err != nil {
		return nil, err
	}
	trees := map[string]bool{}
	for _, l := range lines(out) {
		if sha, typ, _ := strings.Cut(l, " "); typ == "tree" {
			trees[sha] = true
		}
	}
	var mk strings.Builder
	for t := range trees {
		fmt.Fprintf(&mk, "040000 tree %s\t%s\x00", t, t)
	}
	out, err = runGit(ctx, r.Root, nil, strings.NewReader(mk.String()), "mktree", "-z", "--missing")
	if err != nil {
		return nil, err
	}
	tree := trim(out)
	id, err := identityArgs(ctx, r.Root)
	if err != nil {
		return nil, err
	}
	msg := "grove backup catalog of " + r.Root
	out, err = run(ctx, r.Root, append(id, "commit-tree", "--no-gpg-sign", "-m", msg, tree)...)
	if err != nil {
		return nil, err
	}
	cat := trim(out)
	args := append(id, "commit-tree", "--no-gpg-sign", "-m", msg)
	prev := have[plan.Namespace+catalogPart]
	if len(r.present(ctx, map[string]string{"": prev})) == 1 {
		args = append(args, "-p", prev)
	}
	out, err = run(ctx, r.Root, append(args, tree)...)
	if err != nil {
		return nil, err
	}
	return []BackupRef{
		{Name: plan.Namespace + catalogPart, From: "catalog", New: cat, Old: prev},
		{Name: plan.Namespace + catalogEdgePart, From: "catalog", New: trim(out), Old: have[plan.Namespace+catalogEdgePart]},
	}, nil
}

// KeepCatalog records, after plan was sent, its catalog as the last one
// sent to its target (so the next backup can build on it).
func (r *Repo) KeepCatalog(ctx context.Context, plan BackupPlan) error {
	for _, ref := range plan.Refs {
		if ref.Name == plan.Namespace+catalogPart {
			return r.SetRef(ctx, catalogRef(plan.Remote, plan.Namespace), ref.New)
		}
	}
	return nil
}

// backupStashPart is the namespace part holding stash entries, by commit.
const backupStashPart = "stash/"

// backupChunk is how many refspecs one push names at most (argv size).
const backupChunk = 500

var unsafeName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[^A-Za-z0-9._-]+`) })

// SafeName turns s (a host name, a directory name) into one ref name
// component: runs of other characters than letters, digits, '.', '_' and
// '-' become '-', leading dots and a ".lock" suffix are dropped; "" for
// nothing left.
func SafeName(s string) string {
	s = unsafeName().ReplaceAllString(s, "-")
	s = strings.TrimLeft(s, ".-")
	s = strings.TrimSuffix(s, ".lock")
	s = strings.ReplaceAll(s, "..", "-")
	return strings.TrimRight(s, ".")
}

// RepoKey is the name of the repository whose main worktree is root in
// a backup namespace: its directory's name and 8 hex digits of the
// SHA-256 of its absolute path ("app-1a2b3c4d").
func RepoKey(root string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(root)))
	name := SafeName(filepath.Base(root))
	if name == "" {
		name = "repo"
	}
	return name + "-" + hex.EncodeToString(sum[:4])
}

// BackupNamespace is the namespace ("refs/grove-backup/<box>/<key>/") of
// repository key on box; both must be SafeName components.
func BackupNamespace(box, key string) (string, error) {
	if box == "" || SafeName(box) != box || key == "" || SafeName(key) != key {
		return "", fmt.Errorf("backup namespace: invalid box %q or repository key %q", box, key)
	}
	return BackupRefsRoot + box + "/" + key + "/", nil
}

// NormalizeRemote makes a remote that is a local path absolute (git runs
// in the repository, where a relative path would mean something else);
// URLs (scheme://, user@host:path) are returned as they are. An empty
// remote, or one starting with '-', is an error.
func NormalizeRemote(remote string) (string, error) {
	if remote == "" || strings.HasPrefix(remote, "-") {
		return "", grove.Userf(grove.ErrUsage, "give a git URL or the path of a repository, e.g. --to /mnt/backup/grove.git", "bad remote %q", remote)
	}
	if isURL(remote) {
		return remote, nil
	}
	abs, err := filepath.Abs(remote)
	if err != nil {
		return "", fmt.Errorf("remote %s: %w", remote, err)
	}
	return abs, nil
}

// isURL reports whether git reads remote as a URL rather than a path:
// scheme://..., or scp-like host:path with the colon before any slash.
func isURL(remote string) bool {
	if strings.Contains(remote, "://") {
		return true
	}
	i := strings.IndexByte(remote, ':')
	return i > 0 && !strings.Contains(remote[:i], "/")
}

// RemoteRefs lists the refs of remote under prefix (a "refs/.../" prefix):
// full name → object id. It is also how backups find out whether the
// remote is a git repository they can reach: a failure is a
// *grove.UserError saying which (see remoteError).
func RemoteRefs(ctx context.Context, dir, remote, prefix string) (map[string]string, error) {
	if !strings.HasPrefix(prefix, "refs/") || !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("list remote refs: invalid prefix %q", prefix)
	}
	out, err := run(ctx, dir, "-c", "protocol.file.allow=always", "ls-remote", "--refs", "--end-of-options", remote, prefix+"*")
	if err != nil {
		return nil, remoteError(remote, err)
	}
	refs := map[string]string{}
	for _, l := range lines(out) {
		sha, name, ok := strings.Cut(l, "\t")
		if !ok {
			return nil, fmt.Errorf("list refs of %s: unexpected line %q", remote, l)
		}
		if strings.HasPrefix(name, prefix) {
			refs[name] = sha
		}
	}
	return refs, nil
}

// remoteError turns a failed ls-remote, push or fetch on remote into one
// line with a hint: not a git repository, or not reachable.
func remoteError(remote string, err error) error {
	s := stderrOf(err)
	if s == "" {
		return fmt.Errorf("remote %s: %w", remote, err)
	}
	line := strings.TrimPrefix(firstLine(s), "fatal: ")
	for _, m := range []string{"does not appear to be a git repository", "not a git repository", "repository not found", "Repository not found"} {
		if strings.Contains(s, m) {
			return grove.Userf(grove.ErrBadRequest, "give a git URL or the path of a repository; make one with: git init --bare DIR",
				"%s is not a git repository", remote)
		}
	}
	for _, m := range []string{"Could not resolve", "Connection refused", "unable to access", "Could not read from remote",
		"No such file or directory", "timed out", "Permission denied", "No route to host", "Network is unreachable"} {
		if strings.Contains(s, m) {
			return grove.Userf(grove.ErrBadRequest, "check the address, the network and your ssh access to it",
				"cannot reach backup remote %s: %s", remote, line)
		}
	}
	return grove.Userf(grove.ErrBadRequest, "run the git command by hand to see more: "+strings.Join(geArgs(err), " "),
		"backup remote %s refused: %s", remote, line)
}

// geArgs are the git arguments of the *GitError in err's chain.
func geArgs(err error) []string {
	var ge *GitError
	if errors.As(err, &ge) {
		return append([]string{"git"}, ge.Args...)
	}
	return nil
}

// SnapshotCommit is SnapshotWith without the ref: it records the worktree
// at wtPath as a snapshot commit (same layout, same options) and returns
// it, unreferenced (push it, or point a ref at it, before a gc prunes it).
func (r *Repo) SnapshotCommit(ctx context.Context, wtPath string, opt SnapshotOptions) (string, error) {
	wt, err := absPath(wtPath)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wtPath, err)
	}
	// Submodule commits only the worktree's module store holds are kept
	// the way apply keeps them: in the main repository's module store.
	if exists(wt) {
		if err := r.KeepSubmoduleCommits(ctx, wt); err != nil {
			return "", fmt.Errorf("snapshot %s: %w", wt, err)
		}
	}
	snap, err := r.snapshotTree(ctx, wt, opt)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wt, err)
	}
	commit, err := snap.commit(ctx)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wt, err)
	}
	return commit, nil
}

// BackupRef is one remote ref a backup writes.
type BackupRef struct {
	Name string `json:"name"`          // full remote ref name, inside the namespace
	From string `json:"from"`          // the local ref, or "live <id>" for a live snapshot
	New  string `json:"new"`           // the object it is set to
	Old  string `json:"old,omitempty"` // what the remote had ("" for a new ref)
}

// BackupPlan is what a backup of one repository sends.
type BackupPlan struct {
	Remote    string      `json:"remote"`
	Namespace string      `json:"namespace"`
	Refs      []BackupRef `json:"refs"`      // new or moved refs, sorted by name
	Unchanged int         `json:"unchanged"` // refs the remote already has as they are
	// KeptRemote counts refs of the namespace no longer here (deleted by
	// retention, or live snapshots of worktrees gone): kept on the remote.
	KeptRemote int `json:"kept_remote"`
	// Objects and Bytes estimate what the push sends: the objects the new
	// refs reach and the remote's refs of the namespace do not, and their
	// size on this disk (compressed; the pack sent may be smaller).
	Objects int   `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

// PlanBackup compares the local refs/grove/* refs and the live snapshots
// (id → snapshot commit, from SnapshotCommit) with what remote holds
// under ns (BackupNamespace) and returns what a backup would send. A live
// snapshot whose tree is the one the remote already has for that id is
// left out (unchanged). It writes nothing, here or there.
func (r *Repo) PlanBackup(ctx context.Context, remote, ns string, live map[string]string) (BackupPlan, error) {
	plan := BackupPlan{Remote: remote, Namespace: ns, Refs: []BackupRef{}}
	if !strings.HasPrefix(ns, BackupRefsRoot) || !validRefName(ns+"x") || !strings.HasSuffix(ns, "/") {
		return plan, fmt.Errorf("plan backup: invalid namespace %q", ns)
	}
	have, err := RemoteRefs(ctx, r.Root, remote, ns)
	if err != nil {
		return plan, err
	}
	return r.planAgainst(ctx, plan, have, live, true)
}

// planAgainst fills plan (Remote and Namespace set) with what the
// backup holding have (full name → object, in plan.Namespace) lacks.
// With preserve, a ref that moves to an object its old one is no
// ancestor of also sends the old object as <name>@<12 hex of it>, so a
// push never loses what the remote held (bundles keep old refs in their
// earlier files).
func (r *Repo) planAgainst(ctx context.Context, plan BackupPlan, have, live map[string]string, preserve bool) (BackupPlan, error) {
	ns := plan.Namespace
	local, err := r.RefsUnder(ctx, backupLocalPart)
	if err != nil {
		return plan, fmt.Errorf("plan backup: %w", err)
	}
	want := map[string]BackupRef{}
	for name, sha := range local {
		if strings.HasPrefix(name, CatalogRefPrefix) {
			continue // this box's own bookkeeping
		}
		want[ns+name] = BackupRef{Name: ns + name, From: name, New: sha}
	}
	stashes, err := r.stashCommits(ctx)
	if err != nil {
		return plan, fmt.Errorf("plan backup: %w", err)
	}
	for _, sha := range stashes {
		name := ns + backupStashPart + sha
		want[name] = BackupRef{Name: name, From: "stash " + sha, New: sha}
	}
	for id, sha := range live {
		name := ns + backupLivePart + id
		if !validRefName(name) || checkRev(sha) != nil {
			return plan, fmt.Errorf("plan backup: invalid live snapshot %q at %q", id, sha)
		}
		want[name] = BackupRef{Name: name, From: "live " + id, New: sha}
	}
	for name, ref := range want {
		old, ok := have[name]
		ref.Old = old
		switch {
		case ok && old == ref.New:
			plan.Unchanged++
			continue
		case ok && strings.HasPrefix(ref.From, "live ") && r.sameTree(ctx, old, ref.New):
			plan.Unchanged++
			continue
		}
		plan.Refs = append(plan.Refs, ref)
	}
	for name := range have {
		if _, ok := want[name]; !ok && name != ns+catalogPart && name != ns+catalogEdgePart {
			plan.KeptRemote++
		}
	}
	if preserve {
		plan.Refs = append(plan.Refs, r.previous(ctx, plan.Refs, have)...)
	}
	if len(plan.Refs) > 0 {
		cat, err := r.catalog(ctx, plan, want, have)
		if err != nil {
			return plan, fmt.Errorf("plan backup: %w", err)
		}
		plan.Refs = append(plan.Refs, cat...)
	}
	sort.Slice(plan.Refs, func(i, j int) bool { return plan.Refs[i].Name < plan.Refs[j].Name })
	if len(plan.Refs) > 0 {
		var err error
		if plan.Objects, plan.Bytes, err = r.objectsToSend(ctx, plan.Refs, r.present(ctx, have)); err != nil {
			return plan, fmt.Errorf("plan backup: %w", err)
		}
	}
	return plan, nil
}

// previousPrefix marks, in BackupRef.From, the old object of a moved ref
// kept under <name>@<12 hex>.
const previousPrefix = "previous "

// previous are the refs keeping the old objects of the moved refs of
// refs whose new object does not contain the old one.
func (r *Repo) previous(ctx context.Context, refs []BackupRef, have map[string]string) []BackupRef {
	var out []BackupRef
	for _, ref := range refs {
		if ref.Old == "" || ref.Old == ref.New || len(ref.Old) < 12 {
			continue
		}
		keep := ref.Name + "@" + ref.Old[:12]
		if _, ok := have[keep]; ok || !validRefName(keep) {
			continue
		}
		if _, err := run(ctx, r.Root, "merge-base", "--is-ancestor", ref.Old, ref.New); err == nil {
			continue // still reachable from the new one
		}
		out = append(out, BackupRef{Name: keep, From: previousPrefix + ref.Name, New: ref.Old})
	}
	return out
}

// present are the distinct objects of refs that this repository has
// (one cat-file --batch-check for them all); none on an error.
func (r *Repo) present(ctx context.Context, refs map[string]string) []string {
	seen := map[string]bool{}
	var in strings.Builder
	for _, sha := range refs {
		if !seen[sha] && checkRev(sha) == nil {
			seen[sha] = true
			in.WriteString(sha + "\n")
		}
	}
	if in.Len() == 0 {
		return nil
	}
	out, err := runGit(ctx, r.Root, nil, strings.NewReader(in.String()), "cat-file", "--batch-check=%(objectname) %(objecttype)")
	if err != nil {
		return nil
	}
	var have []string
	for _, l := range lines(out) {
		if sha, typ, ok := strings.Cut(l, " "); ok && typ != "missing" && seen[sha] {
			have = append(have, sha)
		}
	}
	sort.Strings(have)
	return have
}

// sameTree reports whether commits a and b (both here) have the same
// tree; false when either is missing.
func (r *Repo) sameTree(ctx context.Context, a, b string) bool {
	if checkRev(a) != nil || checkRev(b) != nil {
		return false
	}
	out, err := run(ctx, r.Root, "rev-parse", a+"^{tree}", b+"^{tree}") // both checked: hex ids
	l := lines(out)
	return err == nil && len(l) == 2 && l[0] == l[1]
}

// objectsToSend counts the objects refs reach that none of olds (the
// remote's tips, all present here) reach, and their size on disk.
func (r *Repo) objectsToSend(ctx context.Context, refs []BackupRef, olds []string) (int, int64, error) {
	var in strings.Builder
	for _, ref := range refs {
		if !strings.HasPrefix(ref.From, previousPrefix) { // those are on the remote already
			in.WriteString(ref.New + "\n")
		}
	}
	for _, o := range olds {
		in.WriteString("^" + o + "\n")
	}
	// The objects a push sends: those of --objects-edge (what git's
	// pack-objects walks for a push), edges ("-<sha>") left out.
	out, err := runGit(ctx, r.Root, nil, strings.NewReader(in.String()), "rev-list", "--objects-edge", "--stdin")
	if err != nil {
		return 0, 0, err
	}
	var objs strings.Builder
	n := 0
	for _, l := range lines(out) {
		if !strings.HasPrefix(l, "-") {
			sha, _, _ := strings.Cut(l, " ")
			objs.WriteString(sha + "\n")
			n++
		}
	}
	if n == 0 {
		return 0, 0, nil
	}
	out, err = runGit(ctx, r.Root, nil, strings.NewReader(objs.String()), "cat-file", "--batch-check=%(objectsize:disk)")
	if err != nil {
		return 0, 0, err
	}
	var bytes int64
	for _, l := range lines(out) {
		v, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("unexpected cat-file output %q", l)
		}
		bytes += v
	}
	return n, bytes, nil
}

// fetchPrevious fetches, under refs/grove/backup/prev/, the old objects
// plan keeps (previous) that are no longer here (pruned), from the refs
// that still hold them on the remote; it returns the refs it made.
func (r *Repo) fetchPrevious(ctx context.Context, plan BackupPlan) (map[string]string, error) {
	olds := map[string]string{}
	for _, ref := range plan.Refs {
		if strings.HasPrefix(ref.From, previousPrefix) {
			olds[ref.Name] = ref.New
		}
	}
	if len(olds) == 0 {
		return nil, nil
	}
	here := map[string]bool{}
	for _, sha := range r.present(ctx, olds) {
		here[sha] = true
	}
	made := map[string]string{}
	var specs []string
	for _, ref := range plan.Refs {
		if strings.HasPrefix(ref.From, previousPrefix) && !here[ref.New] {
			tmp := CatalogRefPrefix + "prev/" + ref.New
			specs = append(specs, "+"+strings.TrimPrefix(ref.From, previousPrefix)+":"+tmp)
			made[tmp] = ref.New
		}
	}
	if len(specs) == 0 {
		return nil, nil
	}
	if err := r.fetchOrSet(ctx, plan.Remote, specs, nil); err != nil {
		return made, fmt.Errorf("fetch the remote's previous refs: %w", err)
	}
	return made, nil
}

// PushBackup sends plan (from PlanBackup) to its remote: each ref of
// plan.Refs set to its object, forced, with explicit refspecs, a few
// hundred per push; nothing else on the remote changes. A remote that
// cannot be reached or is no repository gives a *grove.UserError.
func (r *Repo) PushBackup(ctx context.Context, plan BackupPlan) error {
	fetched, err := r.fetchPrevious(ctx, plan)
	defer func() {
		for ref, sha := range fetched {
			_ = r.DeleteRefIf(context.WithoutCancel(ctx), ref, sha)
		}
	}()
	if err != nil {
		return fmt.Errorf("push backup of %s: %w", r.Root, err)
	}
	for start := 0; start < len(plan.Refs); start += backupChunk {
		end := min(start+backupChunk, len(plan.Refs))
		args := []string{"-c", "protocol.file.allow=always", "-c", "push.followTags=false", "-c", "push.recurseSubmodules=no",
			"-c", "pack.useSparse=false", // see the catalog: the sparse walk would not see the old files under new names
			"push", "--quiet", "--no-verify", "--porcelain", "--end-of-options", plan.Remote}
		for _, ref := range plan.Refs[start:end] {
			if !strings.HasPrefix(ref.Name, plan.Namespace) || !validRefName(ref.Name) || checkRev(ref.New) != nil {
				return fmt.Errorf("push backup: invalid ref %q at %q", ref.Name, ref.New)
			}
			args = append(args, "+"+ref.New+":"+ref.Name)
		}
		grove.Failpoint("backup.before-push")
		if _, err := run(ctx, r.Root, args...); err != nil {
			return fmt.Errorf("push backup of %s: %w", r.Root, remoteError(plan.Remote, err))
		}
	}
	if err := r.KeepCatalog(ctx, plan); err != nil {
		return fmt.Errorf("push backup of %s: %w", r.Root, err)
	}
	return nil
}

// stashCommits are the commits of every stash entry (refs/stash and its
// reflog), newest first; none without a stash.
func (r *Repo) stashCommits(ctx context.Context) ([]string, error) {
	out, err := run(ctx, r.Root, "for-each-ref", "--format=%(refname)", "refs/stash")
	if err != nil || trim(out) == "" {
		return nil, err
	}
	out, err = run(ctx, r.Root, "reflog", "show", "--format=%H", "refs/stash", "--")
	if err != nil {
		return nil, err
	}
	return lines(out), nil
}
