package gitops

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
)

func TestMain(m *testing.M) {
	for k, v := range map[string]string{
		"GIT_CONFIG_GLOBAL":       "/dev/null",
		"GIT_CONFIG_NOSYSTEM":     "1",
		"GIT_AUTHOR_NAME":         "Test Author",
		"GIT_AUTHOR_EMAIL":        "author@example.com",
		"GIT_AUTHOR_DATE":         "2024-01-02T03:04:05Z",
		"GIT_COMMITTER_NAME":      "Test Committer",
		"GIT_COMMITTER_EMAIL":     "committer@example.com",
		"GIT_COMMITTER_DATE":      "2024-01-02T03:04:05Z",
		"GIT_CEILING_DIRECTORIES": os.TempDir(),
	} {
		os.Setenv(k, v)
	}
	if dir := os.Getenv("GITOPS_TEST_HOLD_LOCK"); dir != "" {
		holdLock(dir)
		return
	}
	if action := os.Getenv("GITOPS_TEST_HELPER"); action != "" {
		helperMain(action, os.Args[1:])
		return
	}
	// Ref updates go through kept update-ref processes, as in the daemon
	// (the CLI's one-shot ones are what the cmd/grove tests run).
	KeepRefUpdaters(true)
	code := m.Run()
	KeepRefUpdaters(false)
	os.Exit(code)
}

// helperMain is the body of the helper process of runUnprivileged: it
// runs action with args, says "ok" or the error, and exits.
func helperMain(action string, args []string) {
	ctx := context.Background()
	var err error
	switch action {
	case "purge": // trash entry
		_, err = PurgeEntry(ctx, args[0])
	case "retire": // repo, worktree, branch, trashDir: the gate, then RetireWorktree
		var r *Repo
		if r, err = Open(ctx, args[0]); err == nil {
			rep := r.AtRisk(ctx, args[1], GateOptions{Branch: args[2]})
			if rep.Safe {
				err = r.RetireWorktree(ctx, args[1], args[2], args[3], rep)
			} else {
				err = fmt.Errorf("gate: %v", rep.Risks)
			}
		}
	case "retire-force": // repo, worktree, branch, trashDir: Retire with Force
		var r *Repo
		if r, err = Open(ctx, args[0]); err == nil {
			_, err = r.Retire(ctx, args[1], args[2], args[3], Report{}, RetireOptions{Force: true})
		}
	case "restore": // trash entry
		_, err = RestoreTrash(ctx, args[0], "")
	case "purge-all": // trashDir: everything counts as expired
		_, err = PurgeTrash(ctx, args[0], time.Now().Add(1000*time.Hour), time.Nanosecond, 0)
	default:
		err = fmt.Errorf("unknown helper action %q", action)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
	os.Exit(0)
}

// runUnprivileged runs a helper action (see helperMain) in a child process
// where file permissions hold: as the tests' own user, or, when the tests
// run as root (which ignores permissions), as user nobody. Then
// everything under t's temporary directories is given to nobody for the
// run and back afterwards (git refuses to work in a repository another
// user owns). It returns the helper's error.
func runUnprivileged(t *testing.T, action string, args ...string) error {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GITOPS_TEST_HELPER="+action)
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("running as root and no user nobody to drop to: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		// The test binary, where nobody may run it.
		bin := t.TempDir()
		exe := filepath.Join(bin, "gitops.test")
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(exe, b, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd.Path, cmd.Args[0] = exe, exe
		cmd.Env = append(cmd.Env, "HOME="+bin)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		// t.TempDir's parent holds every directory the test made.
		top := filepath.Dir(bin)
		if err := os.Chmod(top, 0o755); err != nil {
			t.Fatal(err)
		}
		chownTree(t, top, uid, gid)
		defer chownTree(t, top, 0, 0)
	}
	out, err := cmd.CombinedOutput()
	switch s := strings.TrimSpace(string(out)); {
	case err == nil && s == "ok":
		return nil
	case strings.HasPrefix(s, "error: "):
		return errors.New(strings.TrimPrefix(s, "error: "))
	default:
		t.Fatalf("helper %s %v: %v\n%s", action, args, err, out)
		return nil
	}
}

func chownTree(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// holdLock is the body of the helper process of TestLockAcrossProcesses:
// it takes the lock of the repository at dir, says "locked", and holds
// the lock until its stdin closes.
func holdLock(dir string) {
	r, err := Open(context.Background(), dir)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	unlock, err := r.Lock(context.Background())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	unlock()
	os.Exit(0)
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// git runs git in dir for test setup and fails the test on error.
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := run(context.Background(), dir, args...)
	if err != nil {
		t.Fatalf("git %v in %s: %v\n%s", args, dir, err, stderrOf(err))
	}
	return strings.TrimRight(string(out), "\n")
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// newRepo makes a repository on branch main with one commit holding
// README and src/a.txt, and opens it.
func newRepo(t testing.TB) *Repo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	git(t, "", "init", "-q", "-b", "main", dir)
	write(t, filepath.Join(dir, "README"), "hello\n")
	write(t, filepath.Join(dir, "src", "a.txt"), "one\ntwo\nthree\n")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "init")
	r, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// treeFiles reads every regular file and symlink under dir (skipping
// .git) as path -> mode + content, for byte-for-byte comparisons.
func treeFiles(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Name() == ".git" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			m[rel] = "link:" + target
			return err
		}
		b, err := os.ReadFile(p)
		m[rel] = fmt.Sprintf("%v:%s", info.Mode().Perm()&0o100 != 0, b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startLockHolder starts a helper process holding r's lock; closing the
// returned writer makes it release the lock and exit.
func startLockHolder(t *testing.T, r *Repo) (release func()) {
	t.Helper()
	is := is.New(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GITOPS_TEST_HOLD_LOCK="+r.Root)
	stdin, err := cmd.StdinPipe()
	is.NoErr(err)
	stdout, err := cmd.StdoutPipe()
	is.NoErr(err)
	is.NoErr(cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	is.NoErr(err)
	is.Equal(line, "locked\n")
	return func() {
		stdin.Close()
		is.NoErr(cmd.Wait())
	}
}
