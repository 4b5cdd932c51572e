package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// SandboxConfig is the daemon's sandbox setting (grove serve).
type SandboxConfig struct {
	// Mode is supervise.SandboxRequired, SandboxBestEffort or SandboxOff;
	// "" is DefaultSandboxMode().
	Mode string
	// AllowWrite are extra writable paths for every agent.
	AllowWrite []string
}

// DefaultSandboxMode is "required" where the kernel has Landlock,
// "best-effort" (unconfined, said so) where it has none.
func DefaultSandboxMode() string {
	if supervise.LandlockABI() > 0 {
		return supervise.SandboxRequired
	}
	return supervise.SandboxBestEffort
}

// privateObjects is the name, inside a worktree's admin dir, of the
// object directory its sandboxed agent writes (see gitops.AddAlternate).
const privateObjects = "grove-objects"

// defaultWritable are the paths below the agent's HOME that ordinary
// toolchains write: Go's build cache (under ~/.cache) and module cache,
// npm's cache, the agent CLIs' own state.
var defaultWritable = []string{".cache", "go/pkg/mod", ".npm", ".claude", ".codex"}

// deviceFiles are the device files every confined process may write.
var deviceFiles = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx", "/dev/pts"}

// sandboxMode is the daemon's effective sandbox mode.
func (d *Deps) sandboxMode() string {
	if d.Sandbox.Mode == "" {
		return DefaultSandboxMode()
	}
	return d.Sandbox.Mode
}

// oldTaskBranch is the branch layout of tasks submitted before each task's
// branch got a directory of its own.
func oldTaskBranch(taskID string) string { return "grove/" + taskID }

// branchDirOwned reports whether branch's directory under refs/heads
// holds only the workspace's own refs (grove/<id>/work or
// grove/session/<key>/work), so the sandbox may grant it.
func branchDirOwned(branch string) bool {
	dir := filepath.Dir(branch)
	return strings.HasPrefix(branch, "grove/") && dir != "grove" && dir != "grove/session" && dir != "grove/pool"
}

// migrateBranch renames a workspace's branch from the old shared layout
// (grove/<id>, grove/session/<key>) to its own directory and records the
// new name in the workspace row. Idempotent: RenameBranch tells a rename
// done before a crash from one to do.
func (d *Deps) migrateBranch(ctx context.Context, repo *gitops.Repo, ws grove.Workspace) (grove.Workspace, error) {
	if branchDirOwned(ws.Branch) {
		return ws, nil
	}
	var want string
	switch {
	case ws.TaskID != "" && ws.Branch == oldTaskBranch(ws.TaskID):
		want = TaskBranch(ws.TaskID)
	case ws.SessionID != "" && ws.Branch == "grove/session/"+ws.SessionID:
		want = SessionBranch(ws.SessionID)
	default:
		return ws, fmt.Errorf("branch %s of %s is not in a directory of its own: the sandbox cannot grant it (run with --sandbox off)", ws.Branch, ws.Path)
	}
	if err := repo.RenameBranch(ctx, ws.Branch, want); err != nil {
		return ws, err
	}
	grove.Failpoint("sandbox.after-branch-rename")
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		return tx.SetWorkspaceBranch(ctx, ws.ID, want, ws.BaseCommit)
	}); err != nil {
		return ws, err
	}
	d.Logger.Info("branch moved to its own directory", "from", ws.Branch, "to", want)
	ws.Branch = want
	return ws, nil
}

// sandboxFor builds the sandbox of a task's run in dir and the variables
// it adds to the agent's environment (private TMPDIR and object store).
// It migrates the branch layout and lists the private object store as an
// alternate first; SettleRunObjects undoes the latter when the run ends.
// With the sandbox off it returns nil and only the TMPDIR.
func (d *Deps) sandboxFor(ctx context.Context, task grove.Task, ws grove.Workspace, dir string, port int) (*supervise.Sandbox, []string, error) {
	tmp := filepath.Join(dir, "tmp")
	env := []string{"TMPDIR=" + tmp}
	mode := d.sandboxMode()
	if mode == supervise.SandboxOff {
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			return nil, nil, fmt.Errorf("create run tmp: %w", err)
		}
		return &supervise.Sandbox{Mode: mode, MakeDirs: []string{tmp}}, env, nil
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return nil, nil, err
	}
	p, err := d.workspacePolicy(ctx, repo, ws, task.BaseCommit, tmp, agentHome(task))
	if err != nil {
		return nil, nil, err
	}
	objects := filepath.Join(p.admin, privateObjects)
	if err := repo.AddAlternate(ctx, objects); err != nil {
		return nil, nil, err
	}
	grove.Failpoint("sandbox.after-alternate")
	env = append(env, "GIT_OBJECT_DIRECTORY="+objects,
		"GIT_ALTERNATE_OBJECT_DIRECTORIES="+filepath.Join(repo.CommonDir, "objects"))
	write := p.write
	// Caches the agent's environment points elsewhere (--pass-env GOCACHE).
	for _, k := range []string{"GOCACHE", "GOMODCACHE"} {
		if v := task.Options.Environ[k]; filepath.IsAbs(v) {
			write = append(write, v)
		}
	}
	write = append(write, task.Options.AllowWrite...)
	makeDirs, admin := p.makeDirs, p.admin
	o := task.Options
	sb := &supervise.Sandbox{Mode: mode, Write: write, MakeDirs: makeDirs,
		WriteFiles: deviceFiles,
		Net:        o.Net,
		Limits: supervise.Limits{OpenFiles: o.MaxOpenFiles, FileSize: o.MaxFileSize, CPU: o.MaxCPU,
			Memory: o.MaxMemory, Procs: o.MaxProcs},
		Cgroup: fmt.Sprintf("%s-%d", task.ID, task.Attempt), AdminDir: admin}
	if port > 0 {
		sb.BindPorts = []int{port}
	}
	return sb, env, nil
}

// policy is what every confined process of a workspace may write, and
// the directories to create before it starts.
type policy struct {
	write, makeDirs []string
	admin           string // the worktree's git admin dir
}

// workspacePolicy is the writable set of a workspace's confined processes
// (a task's agent, a session's service): the worktree, its admin dir, its
// own branch's ref and reflog directories, the private tmp, the default
// toolchain caches below home, the daemon's --allow-write and the
// repository's box-only allow_write (from its settings at commit). It
// migrates the branch to a directory of its own first.
func (d *Deps) workspacePolicy(ctx context.Context, repo *gitops.Repo, ws grove.Workspace, commit, tmp, home string) (policy, error) {
	ws, err := d.migrateBranch(ctx, repo, ws)
	if err != nil {
		return policy{}, err
	}
	admin, err := gitops.GitDirOf(ws.Path)
	if err != nil {
		return policy{}, fmt.Errorf("sandbox: %w", err)
	}
	refDir := filepath.Dir(filepath.Join(repo.CommonDir, "refs", "heads", ws.Branch))
	logDir := filepath.Dir(filepath.Join(repo.CommonDir, "logs", "refs", "heads", ws.Branch))
	p := policy{write: []string{ws.Path, admin, refDir, logDir, tmp}, makeDirs: []string{tmp, refDir, logDir}, admin: admin}
	if home != "" {
		for _, dir := range defaultWritable {
			p.write = append(p.write, filepath.Join(home, dir))
		}
		p.makeDirs = append(p.makeDirs, filepath.Join(home, ".cache"))
	}
	// The settings the hand-off read at this commit (cached): allow_write
	// comes from this box's git config only.
	box, _, err := d.settingsAt(ctx, repo, commit)
	if err != nil {
		return policy{}, fmt.Errorf("sandbox: %w", err)
	}
	p.write = append(p.write, d.Sandbox.AllowWrite...)
	p.write = append(p.write, box.AllowWrite...)
	return p, nil
}

// serviceSandbox builds the sandbox of a session's service run in dir:
// the workspace's policy (workspacePolicy), the network open (it serves
// its port), no limits. The service commits nothing: it gets no private
// object store, so a `git commit` from it is refused. With the sandbox off
// it returns only the TMPDIR.
func (d *Deps) serviceSandbox(ctx context.Context, repoPath string, ws grove.Workspace, dir string) (*supervise.Sandbox, []string, error) {
	tmp := filepath.Join(dir, "tmp")
	env := []string{"TMPDIR=" + tmp}
	mode := d.sandboxMode()
	if mode == supervise.SandboxOff {
		return &supervise.Sandbox{Mode: mode, MakeDirs: []string{tmp}}, env, nil
	}
	repo, err := d.Repo(ctx, repoPath)
	if err != nil {
		return nil, nil, err
	}
	p, err := d.workspacePolicy(ctx, repo, ws, ws.BaseCommit, tmp, os.Getenv("HOME"))
	if err != nil {
		return nil, nil, err
	}
	return &supervise.Sandbox{Mode: mode, Write: p.write, MakeDirs: p.makeDirs,
		WriteFiles: deviceFiles}, env, nil
}

// agentHome is the HOME the agent gets.
func agentHome(task grove.Task) string {
	if h, ok := task.Options.Environ["HOME"]; ok {
		return h
	}
	return os.Getenv("HOME")
}

// SettleRunObjects moves what a task's agent committed into its private
// object store into the repository's shared store and unlists the
// private store (gitops.SettleObjects). Idempotent; a no-op for a run
// that had none. Called when the run has ended, before the diff.
func (d *Deps) SettleRunObjects(ctx context.Context, task grove.Task) error {
	ws, err := d.Store.TaskWorkspace(ctx, task.ID)
	if err != nil {
		return err
	}
	// The admin dir as recorded before the run: the agent may have
	// rewritten the worktree's .git file that names it.
	spec, err := supervise.ReadSpec(d.RunDir(task.ID, task.Attempt))
	if err != nil || spec.Sandbox == nil || spec.Sandbox.AdminDir == "" {
		return nil // not a sandboxed run (or one that never started)
	}
	admin := spec.Sandbox.AdminDir
	objects := filepath.Join(admin, privateObjects)
	if _, err := os.Stat(objects); err != nil {
		return nil // not a sandboxed run
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return err
	}
	// The daemon runs git in this worktree next: first undo what the
	// agent may have done to its links (sandbox_admin.go).
	if fixed, err := repairLinks(ws.Path, admin, repo.CommonDir); err != nil {
		return err
	} else if len(fixed) > 0 {
		if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
			return tx.AddEvent(ctx, task.ID, "", "links_repaired",
				"the agent had changed its worktree's links to the repository; repaired: "+strings.Join(fixed, ", "))
		}); err != nil {
			return err
		}
	}
	rejected, err := repo.SettleObjects(ctx, objects)
	if err != nil {
		return err
	}
	if len(rejected) > 0 {
		return d.Store.InTx(ctx, func(tx *store.Tx) error {
			return tx.AddEvent(ctx, task.ID, "", "objects_rejected",
				"objects the agent wrote that do not hash to their names were not kept: "+strings.Join(rejected, ", "))
		})
	}
	return nil
}

// envAllowed are the submitter's variables every agent gets.
var envAllowed = []string{"PATH", "HOME", "USER", "LANG", "TERM", "TZ", "SHELL"}

// SubmitterEnv picks from environ (KEY=VALUE) what an agent may see: the
// allow-list, LC_*, and the names in pass. Captured by grove submit.
func SubmitterEnv(environ []string, pass []string) map[string]string {
	out := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if strings.HasPrefix(k, "LC_") || contains(envAllowed, k) || contains(pass, k) {
			out[k] = v
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// baseEnv is the part of an agent's environment that comes from outside
// grove: the submitter's captured variables, or, for a task captured by
// an older grove (or a session's service), the allow-listed ones of the
// daemon. Sorted, so a run's spec is stable.
func baseEnv(task grove.Task) []string {
	src := task.Options.Environ
	if len(src) == 0 {
		src = SubmitterEnv(os.Environ(), nil)
	}
	var env []string
	for k, v := range src {
		if k == "PATH" || strings.HasPrefix(k, "GROVE_") {
			continue // PATH is the task's; GROVE_* are grove's
		}
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}
