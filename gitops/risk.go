package gitops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/grove-dev/grove/gitops/procscan"
)

// Risk reasons: stable strings, part of grove's JSON output.
const (
	RiskDirty        = "dirty"                 // modified tracked files (or unmerged)
	RiskStaged       = "staged"                // changes in the index
	RiskUntracked    = "untracked"             // untracked files
	RiskIgnored      = "ignored"               // ignored files not in KeepIgnored
	RiskHiddenEdit   = "hidden_edit"           // assume-unchanged or skip-worktree entries
	RiskOperation    = "operation_in_progress" // merge, rebase, am, cherry-pick, revert, bisect
	RiskDetached     = "detached_commits"      // detached HEAD with commits on no ref
	RiskUnapplied    = "unapplied_commits"     // commits on the branch that no other ref holds
	RiskStash        = "stash"                 // stash entries made on the branch
	RiskWorktreeRefs = "worktree_refs"         // refs/worktree/*
	RiskSubmodule    = "submodule"             // submodule with new commits or changes
	RiskProcess      = "process"               // a live process whose cwd is inside
	RiskLocked       = "locked"                // git worktree lock
	RiskMissing      = "missing"               // the directory is gone
	RiskGitError     = "git_error"             // a check failed: fail closed
)

// riskOrder is the order reasons appear in a Report.
var riskOrder = []string{
	RiskGitError, RiskMissing, RiskMoved, RiskProcess, RiskOperation, RiskDirty, RiskStaged, RiskUntracked,
	RiskIgnored, RiskNested, RiskHiddenEdit, RiskSubmodule, RiskSubCommits, RiskDetached, RiskReflog, RiskUnapplied, RiskWorktreeRefs,
	RiskStash, RiskLocked,
}

// DefaultKeepIgnored are the ignored paths the gate treats as reproducible
// (removal may delete them without a snapshot, and snapshots leave them
// out), used when GateOptions.KeepIgnored is nil. The list is deliberately
// short: well-known dependency directories and build output that a tool
// regenerates from tracked files — npm's node_modules, Cargo's and Maven's
// target, dist, Python's virtual environments (.venv), bytecode caches
// (__pycache__, *.pyc) and test/type-checker caches (.pytest_cache,
// .mypy_cache, .ruff_cache, .tox), Gradle's .gradle, Next.js's .next.
// Deliberately NOT in it: vendor (often committed or hand-patched
// source), build (too generic a name: hand-made files live there too),
// tmp, *.log, .cache and any other name a user may keep notes under.
// Whatever the list, a directory holding a nested repository is never
// kept: the nested repository is at risk (RiskNested) and recorded whole
// by snapshots. Repositories override it with GateOptions.KeepIgnored
// (and SnapshotOptions.KeepIgnored), e.g. from a per-repository setting.
var DefaultKeepIgnored = []string{
	"node_modules", "target", "dist", ".venv", "__pycache__", "*.pyc",
	".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".gradle", ".next",
}

// Risk is one named reason a worktree holds work that removal would lose.
type Risk struct {
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Report is the at-risk gate's answer for one worktree. Safe is true only
// when Risks is empty.
//
// Besides the verdict it records what was judged, so that RetireWorktree
// can tell whether the worktree is still in the state the gate approved:
// the branch and its tip, HEAD, and (unexported, not in JSON) the
// KeepIgnored patterns and whether processes were scanned.
type Report struct {
	Path  string `json:"path"`
	Safe  bool   `json:"safe"`
	Risks []Risk `json:"risks"`
	// Branch is GateOptions.Branch, the branch removal may delete.
	Branch string `json:"branch,omitempty"`
	// BranchTip is the commit refs/heads/<Branch> pointed at when the gate
	// judged it; "" when Branch is "" or the branch did not exist.
	BranchTip string `json:"branch_tip,omitempty"`
	// Head is the commit the worktree's HEAD pointed at when the gate
	// judged it; "" when the directory is missing or could not be read.
	Head string `json:"head,omitempty"`

	// keep are the ignored-path patterns the gate did not count as at risk
	// (GateOptions.KeepIgnored resolved; nil: none, which is what a Report
	// not made by AtRisk gets).
	keep []string
	// skipProcs: the gate did not scan for processes (SkipProcesses).
	skipProcs bool
}

// Has reports whether the report names reason.
func (rep Report) Has(reason string) bool {
	return slices.ContainsFunc(rep.Risks, func(r Risk) bool { return r.Reason == reason })
}

// GateOptions tune AtRisk.
type GateOptions struct {
	// Branch is the workspace's branch (short name), the one removal
	// deletes. "" skips the unapplied-commits check.
	Branch string
	// AppliedRefs are refs (or commit SHAs) whose history counts as applied
	// or kept, e.g. the target branch or a ref holding the head that was
	// applied. Missing ones are ignored. Commits reachable from any ref
	// other than refs/heads/<Branch> and refs/grove/*, or from another
	// worktree's HEAD, count as kept too.
	AppliedRefs []string
	// KeepIgnored are ignored paths that are NOT at risk: gitignore-like
	// patterns matched against each path component (or, with a "/", the
	// path; a leading "/" anchors at the root). nil means
	// DefaultKeepIgnored; an empty slice keeps none.
	KeepIgnored []string
	// SkipProcesses skips the scan for processes working inside the worktree.
	SkipProcesses bool
	// RefreshIndex lets the gate's status refresh the worktree's index
	// (stat data only, as a plain git status does) when no process works
	// in the worktree: a worktree about to be removed is then cheap to
	// check again (RetireWorktree). Off, the gate writes nothing.
	RefreshIndex bool
}

// maxListed is how many paths a Risk detail names.
const maxListed = 5

type riskSet struct {
	mu    sync.Mutex
	paths map[string][]string
	count map[string]int
	other map[string][]string
}

func newRiskSet() *riskSet {
	return &riskSet{paths: map[string][]string{}, count: map[string]int{}, other: map[string][]string{}}
}

// has reports whether a risk with reason was found so far.
func (s *riskSet) has(reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[reason] > 0 || len(s.other[reason]) > 0 || len(s.paths[reason]) > 0
}

func (s *riskSet) add(reason, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.other[reason] = append(s.other[reason], detail)
}

func (s *riskSet) addPath(reason, p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.paths[reason]) < maxListed {
		s.paths[reason] = append(s.paths[reason], p)
	}
	s.count[reason]++
}

func (s *riskSet) gitErr(what string, err error) {
	s.add(RiskGitError, what+": "+err.Error())
}

func (s *riskSet) risks() []Risk {
	out := []Risk{}
	for _, reason := range riskOrder {
		var details []string
		if n := s.count[reason]; n > 0 {
			d := strings.Join(s.paths[reason], ", ")
			if n > len(s.paths[reason]) {
				d += fmt.Sprintf(" (+%d more)", n-len(s.paths[reason]))
			}
			details = append(details, d)
		}
		for _, d := range s.other[reason] {
			if d != "" {
				details = append(details, d)
			}
		}
		if s.count[reason] > 0 || len(s.other[reason]) > 0 {
			out = append(out, Risk{Reason: reason, Detail: strings.Join(details, "; ")})
		}
	}
	return out
}

// AtRisk inspects the worktree at path and reports every reason its
// removal (and the deletion of refs/heads/<opt.Branch>) would lose work.
// It never fails: a check that cannot run is a "git_error" risk (fail
// closed), so Safe means every check ran and found nothing. It changes
// nothing (status runs with --no-optional-locks).
//
// Checks: tracked changes, staged changes, untracked files and ignored
// files not in KeepIgnored (status); assume-unchanged and skip-worktree
// entries (ls-files -v); merge, rebase, am, cherry-pick, revert or bisect
// in progress; refs/worktree/*; a detached HEAD with commits no ref holds;
// commits on Branch that no other ref, no other worktree's HEAD and no
// AppliedRefs hold; stash entries made on Branch; submodules with new
// commits, changes or untracked files; live processes whose cwd is inside
// path; a worktree lock. A missing directory (or a symlink to one) is
// "missing" (the branch checks still run). path must be the top of a
// linked worktree of r.
//
// The report also records what it judged (Branch, BranchTip, Head, and
// the options a re-check needs): pass it unchanged to RetireWorktree.
func (r *Repo) AtRisk(ctx context.Context, path string, opt GateOptions) (rep Report) {
	rs := newRiskSet()
	rep.Path = path
	rep.Branch = opt.Branch
	rep.skipProcs = opt.SkipProcesses
	defer func() {
		rep.Risks = rs.risks()
		rep.Safe = len(rep.Risks) == 0
	}()
	abs, err := absPath(path)
	if err != nil {
		rs.gitErr("path", err)
		return rep
	}
	rep.Path = abs
	keep := opt.KeepIgnored
	if keep == nil {
		keep = DefaultKeepIgnored
	}
	rep.keep = slices.Clone(keep)
	for _, ref := range opt.AppliedRefs {
		if err := checkRev(ref); err != nil {
			rs.gitErr("applied refs", err)
			return rep
		}
	}

	// Processes first: the git commands below run inside path themselves.
	if !opt.SkipProcesses {
		checkProcesses(abs, rs)
	}

	wts, err := r.Worktrees(ctx)
	if err != nil {
		rs.gitErr("list worktrees", err)
		return rep
	}
	var otherHeads []string
	for _, w := range wts {
		if !samePath(w.Path, abs) && w.Head != "" {
			otherHeads = append(otherHeads, w.Head)
		}
	}
	branch := opt.Branch

	var wg sync.WaitGroup
	// Stat, not Lstat: a symlink whose directory is gone is missing too.
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		rs.add(RiskMissing, "")
		// What git's admin dir still holds goes with its record.
		if gd, err := r.adminDirOf(abs); err != nil {
			rs.gitErr("find admin dir", err)
		} else if gd != "" {
			r.checkAdmin(ctx, &wg, abs, gd, append(slices.Clone(otherHeads), opt.AppliedRefs...), rs)
		}
	} else if err != nil {
		rs.gitErr("stat", err)
	} else {
		info, err := r.worktreeInfo(ctx, abs)
		if err != nil {
			rs.gitErr("inspect worktree", err)
		} else {
			rep.Head = info.head
			stashBranch := opt.Branch
			if stashBranch == "" {
				stashBranch = info.branch
			}
			refresh := opt.RefreshIndex && !opt.SkipProcesses && !rs.has(RiskProcess)
			r.checkTree(ctx, &wg, abs, info.gitDir, stashBranch, keep, refresh, false, rs)
			held := append(append([]string{info.head}, otherHeads...), opt.AppliedRefs...)
			wg.Go(func() { r.checkReflog(ctx, abs, nil, held, rs) })
			if info.branch == "" {
				wg.Go(func() {
					n, err := r.unheld(ctx, info.head, "", otherHeads, opt.AppliedRefs)
					switch {
					case err != nil:
						rs.gitErr("detached commits", err)
					case n > 0:
						rs.add(RiskDetached, fmt.Sprintf("%d commit(s) at %s on no branch", n, info.head))
					}
				})
			}
		}
	}
	var branchTip string
	if branch != "" {
		wg.Go(func() {
			ref := "refs/heads/" + branch
			tip, err := r.RefCommit(ctx, ref)
			if err != nil {
				rs.gitErr("read branch", err)
				return
			}
			branchTip = tip
			if tip == "" {
				return
			}
			n, err := r.unheld(ctx, tip, ref, otherHeads, opt.AppliedRefs)
			switch {
			case err != nil:
				rs.gitErr("unapplied commits", err)
			case n > 0:
				rs.add(RiskUnapplied, fmt.Sprintf("%d commit(s) on %s that no other ref holds", n, branch))
			}
		})
		if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
			wg.Go(func() { r.checkStash(ctx, branch, rs) })
		}
	}
	wg.Wait()
	rep.BranchTip = branchTip
	return rep
}

// checkTree starts (on wg) the checks of the worktree at dir (its top)
// with git dir gitDir that look at the worktree itself: status, hidden
// edits, refs/worktree/*, stashes made on stashBranch; and runs the git
// dir checks (operation in progress, lock) before it returns.
//
// moved says dir is a worktree RetireWorktree moved into the trash: its
// submodules' .git files name their git dirs by a path relative to the
// old place, so git cannot open them there. Status then leaves submodule
// contents alone (the gate looked at them before the move, and the trash
// entry keeps them) and submodule stores are found in gitDir/modules.
func (r *Repo) checkTree(ctx context.Context, wg *sync.WaitGroup, dir, gitDir, stashBranch string, keep []string, refresh, moved bool, rs *riskSet) {
	wg.Go(func() { r.checkStatus(ctx, dir, keep, refresh, moved, rs) })
	wg.Go(func() { r.checkHidden(ctx, dir, gitDir, rs) })
	wg.Go(func() { r.checkWorktreeRefs(ctx, dir, gitDir, rs) })
	wg.Go(func() { r.checkStash(ctx, stashBranch, rs) })
	wg.Go(func() { r.checkSubCommits(ctx, dir, gitDir, moved, rs) })
	checkGitDir(gitDir, rs)
}

// checkProcesses adds a RiskProcess for live processes working in dir.
func checkProcesses(dir string, rs *riskSet) {
	pids, err := procscan.In(dir)
	switch {
	case err != nil:
		rs.add(RiskProcess, "cannot scan processes: "+err.Error())
	case len(pids) > 0:
		s := make([]string, len(pids))
		for i, p := range pids {
			s[i] = strconv.Itoa(p)
		}
		rs.add(RiskProcess, "pids "+strings.Join(s, ", "))
	}
}

type wtInfo struct {
	gitDir string
	head   string
	branch string // short; "" if detached
}

// worktreeInfo checks that dir is the top of a linked worktree of r and
// reads its git dir and HEAD.
func (r *Repo) worktreeInfo(ctx context.Context, dir string) (wtInfo, error) {
	if info, known := r.worktreeInfoFiles(dir); known {
		return info, nil
	}
	out, err := run(ctx, dir, "rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir", "--show-toplevel",
		"HEAD", "--symbolic-full-name", "HEAD")
	if err != nil {
		return wtInfo{}, err
	}
	l := lines(out)
	if len(l) != 5 {
		return wtInfo{}, fmt.Errorf("unexpected rev-parse output %q", out)
	}
	switch {
	case !samePath(l[0], r.CommonDir):
		return wtInfo{}, fmt.Errorf("%s belongs to another repository (%s)", dir, l[0])
	case !samePath(l[2], dir):
		return wtInfo{}, fmt.Errorf("%s is not the top of a worktree (%s is)", dir, l[2])
	case samePath(l[1], r.CommonDir):
		return wtInfo{}, fmt.Errorf("%s is the main worktree", dir)
	}
	info := wtInfo{gitDir: l[1], head: l[3]}
	if b, ok := strings.CutPrefix(l[4], "refs/heads/"); ok {
		info.branch = b
	}
	return info, nil
}

// unheld counts commits reachable from tip that no ref holds except
// exclude and refs/grove/*, no other worktree HEAD and no applied ref.
//
// A tip that is plainly held (heldAtOnce: one of otherHeads or applied, or
// a parent of one) counts 0 without asking git.
func (r *Repo) unheld(ctx context.Context, tip, exclude string, otherHeads, applied []string) (int, error) {
	if r.heldAtOnce([]string{tip}, append(slices.Clone(otherHeads), applied...)) {
		return 0, nil
	}
	args := []string{"rev-list", "--count", "--ignore-missing", tip, "--not", "--exclude=refs/grove/*"}
	if exclude != "" {
		args = append(args, "--exclude="+exclude)
	}
	args = append(args, "--glob=refs/*")
	args = append(args, otherHeads...)
	args = append(args, applied...)
	out, err := run(ctx, r.Root, args...)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(trim(out))
}

// checkStatus reads `status --porcelain=v2` for dirty, staged, untracked,
// ignored and submodule risks.
func (r *Repo) checkStatus(ctx context.Context, dir string, keep []string, refresh, moved bool, rs *riskSet) {
	subs := "--ignore-submodules=none"
	if moved {
		subs = "--ignore-submodules=all"
	}
	args := []string{"--no-optional-locks", "status", "--porcelain=v2", "-z", "-uall",
		"--ignored=matching", "--no-renames", subs}
	if refresh {
		args = args[1:]
	}
	out, err := run(ctx, dir, args...)
	if err != nil {
		rs.gitErr("status", err)
		return
	}
	f := strings.Split(string(out), "\x00")
	var dirs []string // untracked and ignored directories git did not look into
	defer func() { checkNested(ctx, dir, dirs, rs) }()
	for i := 0; i < len(f); i++ {
		e := f[i]
		if len(e) < 2 {
			continue
		}
		switch e[0] {
		case '?':
			rs.addPath(RiskUntracked, e[2:])
			if strings.HasSuffix(e, "/") {
				dirs = append(dirs, e[2:])
			}
		case '!':
			if strings.HasSuffix(e, "/") {
				dirs = append(dirs, e[2:])
			}
			if !keptIgnored(e[2:], keep) {
				rs.addPath(RiskIgnored, e[2:])
			}
		case '1', '2', 'u':
			n := map[byte]int{'1': 9, '2': 10, 'u': 11}[e[0]]
			p := strings.SplitN(e, " ", n)
			if len(p) != n {
				rs.gitErr("status", fmt.Errorf("unexpected entry %q", e))
				return
			}
			xy, sub, name := p[1], p[2], p[n-1]
			if e[0] == '2' {
				i++ // the original path follows
			}
			if e[0] == 'u' {
				rs.addPath(RiskDirty, name+" (unmerged)")
				continue
			}
			if xy[0] != '.' {
				rs.addPath(RiskStaged, name)
			}
			if strings.HasPrefix(sub, "S") {
				if sub != "S..." {
					rs.addPath(RiskSubmodule, name)
				}
			} else if xy[1] != '.' {
				rs.addPath(RiskDirty, name)
			}
		}
	}
}

// keptIgnored reports whether the ignored path p (a directory ends in "/")
// matches one of the keep patterns.
func keptIgnored(p string, keep []string) bool {
	p = strings.TrimSuffix(p, "/")
	comps := strings.Split(p, "/")
	for _, pat := range keep {
		anchored := strings.HasPrefix(pat, "/") // as in .gitignore: from the root only
		pat = strings.Trim(pat, "/")
		if pat == "" {
			continue
		}
		if anchored || strings.Contains(pat, "/") {
			if ok, _ := path.Match(pat, p); ok || strings.HasPrefix(p, pat+"/") {
				return true
			}
			continue
		}
		for _, c := range comps {
			if ok, _ := path.Match(pat, c); ok {
				return true
			}
		}
	}
	return false
}

// checkHidden finds assume-unchanged entries, and skip-worktree entries
// whose file exists (so may hold edits git does not look at), in the
// index of the worktree at dir whose git dir is gitDir: read from the
// index file when it can be read exactly (index_flags.go), else from
// `git ls-files -v`.
func (r *Repo) checkHidden(ctx context.Context, dir, gitDir string, rs *riskSet) {
	if hashLen, ok := objectHashLen(r.CommonDir); ok {
		if hidden, known := readHiddenEntries(filepath.Join(gitDir, "index"), hashLen); known {
			for _, h := range hidden {
				switch {
				case h.assumeValid:
					rs.addPath(RiskHiddenEdit, h.name+" (assume-unchanged)")
				case h.skipWorktree && exists(filepath.Join(dir, h.name)):
					rs.addPath(RiskHiddenEdit, h.name+" (skip-worktree)")
				}
			}
			return
		}
	}
	out, err := run(ctx, dir, "ls-files", "-v", "-z")
	if err != nil {
		rs.gitErr("ls-files", err)
		return
	}
	for _, e := range fields0(out) {
		if len(e) < 3 {
			continue
		}
		tag, name := e[0], e[2:]
		switch {
		case tag >= 'a' && tag <= 'z':
			rs.addPath(RiskHiddenEdit, name+" (assume-unchanged)")
		case tag == 'S' && exists(filepath.Join(dir, name)):
			rs.addPath(RiskHiddenEdit, name+" (skip-worktree)")
		}
	}
}

// checkWorktreeRefs adds the worktree's own refs (refs/worktree/*) of the
// worktree at dir whose git dir is gitDir: read from its ref files when
// they answer exactly, else from git.
func (r *Repo) checkWorktreeRefs(ctx context.Context, dir, gitDir string, rs *riskSet) {
	if refs, known := worktreeRefFiles(r.CommonDir, gitDir); known {
		for _, ref := range refs {
			rs.addPath(RiskWorktreeRefs, ref)
		}
		return
	}
	out, err := run(ctx, dir, "for-each-ref", "--format=%(refname)", "refs/worktree/")
	if err != nil {
		rs.gitErr("worktree refs", err)
		return
	}
	for _, ref := range lines(out) {
		rs.addPath(RiskWorktreeRefs, ref)
	}
}

// checkGitDir looks in the worktree's git dir for operations in progress
// and a lock.
func checkGitDir(gitDir string, rs *riskSet) {
	ops := []struct{ file, name string }{
		{"MERGE_HEAD", "merge"},
		{"rebase-merge", "rebase"},
		{"rebase-apply", "rebase"},
		{"CHERRY_PICK_HEAD", "cherry-pick"},
		{"REVERT_HEAD", "revert"},
		{"sequencer", "cherry-pick or revert sequence"},
		{"BISECT_LOG", "bisect"},
	}
	var found []string
	for _, op := range ops {
		if !exists(filepath.Join(gitDir, op.file)) {
			continue
		}
		name := op.name
		if op.file == "rebase-apply" && exists(filepath.Join(gitDir, "rebase-apply", "applying")) {
			name = "am"
		}
		if !slices.Contains(found, name) {
			found = append(found, name)
		}
	}
	if len(found) > 0 {
		rs.add(RiskOperation, strings.Join(found, ", "))
	}
	if b, err := os.ReadFile(filepath.Join(gitDir, "locked")); err == nil {
		rs.add(RiskLocked, firstLine(string(b)))
	} else if !errors.Is(err, os.ErrNotExist) {
		rs.add(RiskLocked, "cannot read lock: "+err.Error())
	}
}

// checkStash counts stash entries made on branch ("WIP on <branch>: ..."
// or "On <branch>: ..."), asking git (for-each-ref, reflog), so it holds
// for every ref storage git supports.
func (r *Repo) checkStash(ctx context.Context, branch string, rs *riskSet) {
	if branch == "" {
		return
	}
	if oid, known := filesRef(r.CommonDir, "refs/stash"); known && oid == "" {
		return // no stash at all
	}
	out, err := run(ctx, r.Root, "for-each-ref", "--format=%(refname)", "refs/stash")
	if err != nil {
		rs.gitErr("stash", err)
		return
	}
	if trim(out) == "" {
		return
	}
	out, err = run(ctx, r.Root, "reflog", "show", "--format=%gs", "refs/stash", "--")
	if err != nil {
		rs.gitErr("stash", err)
		return
	}
	n := 0
	for _, msg := range lines(out) {
		if strings.HasPrefix(msg, "WIP on "+branch+": ") || strings.HasPrefix(msg, "On "+branch+": ") {
			n++
		}
	}
	if n > 0 {
		rs.add(RiskStash, fmt.Sprintf("%d stash entr%s made on %s", n, map[bool]string{true: "y", false: "ies"}[n == 1], branch))
	}
}
