package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove/jobs"
)

// gitIn runs git in dir with the harness's environment.
func (h *harness) gitIn(dir string, args ...string) string {
	h.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, h.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.t.Fatalf("git %v in %s: %v\n%s", args, dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

// groveEnv runs the CLI with extra environment.
func (h *harness) groveEnv(env []string, args ...string) (string, string, error) {
	cmd := exec.Command("grove", args...)
	cmd.Dir, cmd.Env = h.work, append(append([]string{}, h.env...), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// diffR is `diff -r` of two trees without .git entries at any depth;
// "" when they are identical.
func diffR(t *testing.T, a, b string) string {
	t.Helper()
	out, err := exec.Command("diff", "-r", "--no-dereference", "-x", ".git", a, b).CombinedOutput()
	if err != nil {
		return string(out) + err.Error()
	}
	return ""
}

// listing is every entry under dir but its top .git, with its type, mode
// and link target (what diff -r does not compare), nested .git dirs too.
func listing(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("find", dir, "-path", filepath.Join(dir, ".git"), "-prune", "-o", "-printf", "%P %y %m %l\n").Output()
	if err != nil {
		t.Fatal(err)
	}
	l := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(l)
	return strings.Join(l, "\n")
}

// Issue 16, "Done when": an at-risk worktree (untracked file, stash,
// nested repository with a commit) and a force-closed task are backed up
// to a bare repository; the source home and repository are deleted; on a
// fresh home with a fresh clone, grove restore --from brings both back
// diff -r identical, the stash and the nested repository's history too. A
// second backup sends nothing new.
func TestBackupRestoreOnAnotherBox(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--reap-every", "off")
	remote := filepath.Join(h.work, "backup.git")
	h.gitIn(h.work, "init", "-q", "--bare", remote)
	h.git("push", "-q", remote, "main") // the repository's own remote, for the fresh clone

	agent := h.writeAgent("agent.sh", "echo agent-work > work.txt\n")
	live := h.mustGrove("submit", "--repo", h.repo, "--", agent)
	closed := h.mustGrove("submit", "--repo", h.repo, "--", agent)
	h.mustGrove("wait", live, closed)

	// The at-risk worktree: work after the agent, a stash, a nested repo.
	wt := h.worktreeOf(live)
	is.NoErr(os.WriteFile(filepath.Join(wt, "untracked.txt"), []byte("only on this disk\n"), 0o644))
	is.NoErr(os.WriteFile(filepath.Join(wt, "README.md"), []byte("# repo\nstashed edit\n"), 0o644))
	h.gitIn(wt, "stash", "push", "-q", "-m", "half-done")
	nested := filepath.Join(wt, "scratch")
	h.gitIn(h.work, "init", "-q", "-b", "main", nested)
	is.NoErr(os.WriteFile(filepath.Join(nested, "n.txt"), []byte("nested\n"), 0o644))
	h.gitIn(nested, "add", "-A")
	h.gitIn(nested, "commit", "-q", "-m", "nested commit")
	is.NoErr(os.WriteFile(filepath.Join(wt, "script.sh"), []byte("#!/bin/sh\n"), 0o755))
	keepLive := filepath.Join(h.work, "want-live")
	is.NoErr(exec.Command("cp", "-a", wt, keepLive).Run())

	// The force-closed task: uncommitted work, then close --force.
	cwt := h.worktreeOf(closed)
	is.NoErr(os.WriteFile(filepath.Join(cwt, "draft.txt"), []byte("draft\n"), 0o644))
	keepClosed := filepath.Join(h.work, "want-closed")
	is.NoErr(exec.Command("cp", "-a", cwt, keepClosed).Run())
	h.mustGrove("close", "--force", closed)
	h.until(20*time.Second, "forced close", func() bool { return h.closed(closed) })

	// Dry run: says what it would send, sends nothing.
	out := h.mustGrove("backup", "--to", remote, "--dry-run", "--box", "box1")
	is.True(strings.Contains(out, "would send"))
	is.Equal(h.gitIn(remote, "for-each-ref", "refs/grove-backup/"), "")

	var rep jobs.BackupReport
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("backup", "--to", remote, "--box", "box1", "--json")), &rep))
	is.True(rep.OK)
	is.True(rep.Refs >= 4) // snapshot, task refs, live snapshot, stash
	is.Equal(len(rep.Repos), 1)
	is.Equal(len(rep.Repos[0].Live), 1)
	is.Equal(rep.Repos[0].Live[0].ID, live)
	is.True(strings.Contains(strings.Join(rep.Repos[0].Live[0].Reasons, ","), "untracked"))
	is.Equal(h.gitIn(remote, "rev-parse", "main"), h.git("rev-parse", "main")[:40]) // the remote's other refs: untouched
	// Second run: nothing changed, nothing sent.
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("backup", "--to", remote, "--box", "box1", "--json")), &rep))
	is.True(rep.OK)
	if rep.Refs != 0 {
		b, _ := json.Marshal(rep)
		t.Fatalf("second backup sent %d refs: %s", rep.Refs, b)
	}
	is.Equal(rep.Bytes, int64(0))

	// Bundles of the same, uploaded with a command (argv, no shell).
	bundles, uploaded := filepath.Join(h.work, "bundles"), filepath.Join(h.work, "uploaded")
	is.NoErr(os.MkdirAll(uploaded, 0o755))
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("backup", "--bundle", bundles, "--box", "box1", "--json",
		"--upload", "cp {} "+uploaded+"/")), &rep))
	is.True(rep.OK)
	is.True(rep.Refs >= 4)
	var m jobs.BundleManifest
	b, err := os.ReadFile(filepath.Join(uploaded, jobs.ManifestName))
	is.NoErr(err)
	is.NoErr(json.Unmarshal(b, &m))
	is.Equal(len(m.Bundles), 1)
	is.True(m.Bundles[0].Uploaded)
	// A second bundle run writes nothing: nothing changed.
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("backup", "--bundle", bundles, "--box", "box1", "--json")), &rep))
	is.Equal(rep.Refs, 0)
	// A change: the next bundle is incremental (prerequisites: the first).
	is.NoErr(os.WriteFile(filepath.Join(wt, "later.txt"), []byte("later\n"), 0o644))
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("backup", "--bundle", bundles, "--box", "box1", "--json",
		"--upload", "cp {} "+uploaded+"/")), &rep))
	is.Equal(rep.Refs, 3) // the live snapshot, the catalog and its edge
	b, err = os.ReadFile(filepath.Join(bundles, jobs.ManifestName))
	is.NoErr(err)
	is.NoErr(json.Unmarshal(b, &m))
	is.Equal(len(m.Bundles), 2)
	is.True(len(m.Bundles[1].Prerequisites) > 0)
	is.True(m.Bundles[1].Size < m.Bundles[0].Size)
	for _, bd := range m.Bundles {
		_, err := os.Stat(filepath.Join(uploaded, bd.File))
		is.NoErr(err) // uploaded
	}
	is.NoErr(os.WriteFile(filepath.Join(keepLive, "later.txt"), []byte("later\n"), 0o644))
	wantStatus := h.gitIn(wt, "status", "--porcelain")
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("backup", "--to", remote, "--box", "box1", "--json")), &rep))
	is.Equal(rep.Refs, 4) // the live snapshot again, the old one kept as live/ID@..., the catalog and its edge

	// The box dies: its home, repository and worktrees are gone.
	h.stopDaemon(15)
	if h.st != nil {
		h.st.Close()
		h.st = nil
	}
	is.NoErr(os.RemoveAll(h.home))
	is.NoErr(os.RemoveAll(h.repo))

	clone := filepath.Join(h.work, "clone")
	h.gitIn(h.work, "clone", "-q", remote, clone)
	fresh := []string{"GROVE_HOME=" + filepath.Join(h.work, "home2")}
	for _, c := range []struct{ id, want string }{{closed, keepClosed}, {live, keepLive}} {
		dst := filepath.Join(h.work, "restored-"+c.id)
		out, errOut, err := h.groveEnv(fresh, "restore", "--from", remote, c.id, "--repo", clone, "--path", dst)
		if err != nil {
			t.Fatalf("restore --from %s: %v\n%s", c.id, err, errOut)
		}
		t.Logf("%s", out)
		is.Equal(diffR(t, c.want, dst), "")
		is.Equal(listing(t, dst), listing(t, c.want))
	}
	dst := filepath.Join(h.work, "restored-"+live)
	is.Equal(h.gitIn(dst, "stash", "list"), "stash@{0}: On grove/"+live+"/work: half-done")
	is.Equal(h.gitIn(filepath.Join(dst, "scratch"), "log", "--format=%s"), "nested commit")
	is.Equal(h.gitIn(dst, "status", "--porcelain"), wantStatus)

	// From the uploaded bundles, on yet another box: every bundle
	// verifies (in a clone holding the earlier ones), and restores the same.
	clone3 := filepath.Join(h.work, "clone3")
	h.gitIn(h.work, "clone", "-q", remote, clone3)
	fresh3 := []string{"GROVE_HOME=" + filepath.Join(h.work, "home3")}
	dst3 := filepath.Join(h.work, "restored3")
	out, errOut, err := h.groveEnv(fresh3, "restore", "--from", uploaded, live, "--repo", clone3, "--path", dst3)
	if err != nil {
		t.Fatalf("restore --from DIR: %v\n%s", err, errOut)
	}
	t.Logf("%s", out)
	is.Equal(diffR(t, keepLive, dst3), "")
	is.Equal(listing(t, dst3), listing(t, keepLive))
	is.Equal(h.gitIn(dst3, "stash", "list"), "stash@{0}: On grove/"+live+"/work: half-done")
	for _, bd := range m.Bundles {
		h.gitIn(clone3, "bundle", "verify", "--quiet", filepath.Join(uploaded, bd.File))
	}

	// Unknown id, a --path in the way: one line, a hint.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"restore", "--from", remote, "tnosuch", "--repo", clone}, "holds no backup of tnosuch"},
		{[]string{"restore", "--from", remote, closed, "--repo", clone, "--path", dst}, "already exists and is not empty"},
	} {
		_, errOut, err := h.groveEnv(fresh, c.args...)
		is.True(err != nil)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		is.Equal(len(lines), 2)
		is.True(strings.Contains(lines[0], c.want))
		is.True(strings.HasPrefix(lines[1], "hint: "))
	}
}

// Issue 16: a scheduled backup (grove serve --backup-every --backup-to)
// whose remote cannot be reached is loud in doctor and ls --at-risk;
// a good backup afterwards makes doctor show its age.
func TestBackupScheduledFailureIsLoud(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--reap-every", "off", "--backup-every", "1h", "--backup-to", "http://127.0.0.1:1/x.git")
	h.until(20*time.Second, "the scheduled backup's failure", func() bool {
		st, err := jobs.ReadBackupState(h.home)
		return err == nil && st.LastRun != nil && !st.LastRun.OK
	})
	out, _, err := h.grove("doctor")
	is.True(err != nil) // exit 1: a problem
	is.True(regexp.MustCompile(`(?m)^PROBLEM +backup +the last backup`).MatchString(out))
	is.True(strings.Contains(out, "FAILED: cannot reach backup remote http://127.0.0.1:1/x.git"))
	is.True(strings.Contains(out, "no backup has succeeded yet"))
	out = h.mustGrove("ls", "--at-risk")
	is.True(strings.Contains(out, "BACKUP: the last backup"))
	is.True(strings.Contains(h.mustGrove("events", "--json"), `"kind":"backup_failed"`))

	remote := filepath.Join(h.work, "backup.git")
	h.gitIn(h.work, "init", "-q", "--bare", remote)
	h.mustGrove("backup", "--to", remote)
	out = h.mustGrove("doctor")
	is.True(regexp.MustCompile(`(?m)^ok +backup +last good backup [0-9]+s ago`).MatchString(out))
	is.True(!strings.Contains(h.mustGrove("ls", "--at-risk"), "BACKUP"))
	is.True(strings.Contains(h.mustGrove("events", "--json"), `"kind":"backup"`))

	// Good, but too long ago for its schedule (a daemon that stopped, a
	// job that no longer runs): overdue, a problem.
	sched, err := jobs.ReadBackupSchedule(h.home)
	is.NoErr(err)
	is.Equal(sched.Spec, "@every 1h0m0s")
	is.Equal(sched.Remote, "http://127.0.0.1:1/x.git")
	sched.Since = time.Now().Add(-5 * time.Hour)
	b, err := json.Marshal(sched)
	is.NoErr(err)
	is.NoErr(os.WriteFile(jobs.BackupSchedulePath(h.home), b, 0o600))
	st, err := jobs.ReadBackupState(h.home)
	is.NoErr(err)
	st.LastSuccess.At = time.Now().Add(-3 * time.Hour)
	st.LastRun = st.LastSuccess
	b, err = json.Marshal(st)
	is.NoErr(err)
	is.NoErr(os.WriteFile(jobs.BackupStatePath(h.home), b, 0o600))
	out, _, err = h.grove("doctor")
	is.True(err != nil)
	is.True(regexp.MustCompile(`(?m)^PROBLEM +backup +the backup to http://127.0.0.1:1/x.git is overdue \(scheduled @every 1h0m0s\): last good backup 3h`).MatchString(out))
}

// Bad targets are refused with a hint. The backup's crash points: killed
// at each (SIGKILL), the next run
// completes the backup; no half-written bundle is recorded or left
// behind, and every bundle verifies.
func TestBackupCrashPoints(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.mustGrove("submit", "--repo", h.repo, "--", "true") // registers the repository (no daemon needed)
	h.git("update-ref", "refs/grove/snapshots/tx", "HEAD")
	// Non-git remote, unreachable remote, no target: one line, a hint.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "--to", h.work}, "is not a git repository"},
		{[]string{"backup", "--to", "http://127.0.0.1:1/x.git"}, "cannot reach backup remote"},
		{[]string{"backup"}, "give one of --to REMOTE and --bundle DIR"},
	} {
		_, errOut, err := h.grove(c.args...)
		is.True(err != nil)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		is.Equal(len(lines), 2)
		is.True(strings.Contains(lines[0], c.want))
		is.True(strings.HasPrefix(lines[1], "hint: "))
	}
	for i, c := range []struct{ point, flag string }{
		{"backup.after-snapshots", "--to"},
		{"backup.before-push", "--to"},
		{"backup.bundle-before-rename", "--bundle"},
		{"backup.bundle-before-manifest", "--bundle"},
	} {
		target := filepath.Join(h.work, "backup-"+strconv.Itoa(i))
		if c.flag == "--to" {
			h.gitIn(h.work, "init", "-q", "--bare", target)
		}
		out, errOut, err := h.groveEnv([]string{"GROVE_FAILPOINTS=" + c.point}, "backup", c.flag, target)
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: not killed: %v\n%s%s", c.point, err, out, errOut)
		}
		is.Equal(ee.Sys().(syscall.WaitStatus).Signal(), syscall.SIGKILL)
		h.mustGrove("backup", c.flag, target)
		if c.flag == "--to" {
			is.True(strings.Contains(h.gitIn(target, "for-each-ref", "refs/grove-backup/"), "/refs/grove/snapshots/tx"))
			continue
		}
		var m jobs.BundleManifest
		b, err := os.ReadFile(filepath.Join(target, jobs.ManifestName))
		is.NoErr(err)
		is.NoErr(json.Unmarshal(b, &m))
		is.Equal(len(m.Bundles), 1)
		h.git("bundle", "verify", "--quiet", filepath.Join(target, m.Bundles[0].File))
		ents, err := os.ReadDir(target)
		is.NoErr(err)
		for _, e := range ents {
			is.True(!strings.HasSuffix(e.Name(), ".part")) // nothing half-written left
		}
	}
}
