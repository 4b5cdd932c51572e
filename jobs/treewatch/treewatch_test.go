//go:build linux

package treewatch

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/matryer/is"
)

// tree makes a small git worktree-like tree: a repo with nested files.
func tree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{"a/b/c.txt", "a/d.txt", "e.txt"} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(p+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"}} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

func TestChanges(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	changes := map[string]func(dir string) error{
		"write":   func(d string) error { return os.WriteFile(filepath.Join(d, "a/b/c.txt"), []byte("new\n"), 0o644) },
		"create":  func(d string) error { return os.WriteFile(filepath.Join(d, "a/b/new.txt"), nil, 0o644) },
		"mkdir":   func(d string) error { return os.Mkdir(filepath.Join(d, "a/x"), 0o755) },
		"remove":  func(d string) error { return os.Remove(filepath.Join(d, "a/d.txt")) },
		"chmod":   func(d string) error { return os.Chmod(filepath.Join(d, "e.txt"), 0o755) },
		"rename":  func(d string) error { return os.Rename(filepath.Join(d, "e.txt"), filepath.Join(d, "f.txt")) },
		"in .git": func(d string) error { return os.WriteFile(filepath.Join(d, ".git", "scratch"), nil, 0o644) },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			dir := tree(t)
			tr, err := w.Watch(dir)
			is.NoErr(err)
			defer tr.Close()
			// Reading (what git status does) is not a change.
			out, err := exec.Command("git", "-C", dir, "--no-optional-locks", "status", "--porcelain", "-uall").CombinedOutput()
			is.NoErr(err)
			is.Equal(string(out), "")
			_, err = os.ReadFile(filepath.Join(dir, "a/b/c.txt"))
			is.NoErr(err)
			is.True(!tr.Changed())
			is.NoErr(change(dir))
			is.True(tr.Changed())
			is.True(tr.Changed()) // stays changed
		})
	}
}

// Trees are independent; a closed tree reads as changed; a vanished root
// or a closed watcher too.
func TestTreesAndClose(t *testing.T) {
	is := is.New(t)
	w, err := New()
	is.NoErr(err)
	a, b := tree(t), tree(t)
	ta, err := w.Watch(a)
	is.NoErr(err)
	tb, err := w.Watch(b)
	is.NoErr(err)
	is.NoErr(os.WriteFile(filepath.Join(a, "e.txt"), []byte("x"), 0o644))
	is.True(ta.Changed())
	is.True(!tb.Changed())
	tb.Close()
	tb.Close()
	is.True(tb.Changed())

	c := tree(t)
	tc, err := w.Watch(c)
	is.NoErr(err)
	is.NoErr(os.RemoveAll(c))
	is.True(tc.Changed())

	_, err = w.Watch(filepath.Join(t.TempDir(), "missing"))
	is.True(err != nil)
	link := filepath.Join(t.TempDir(), "link")
	is.NoErr(os.Symlink(b, link))
	_, err = w.Watch(link) // would watch nothing: refused
	is.True(err != nil)
	_, err = w.Watch(filepath.Join(b, "e.txt"))
	is.True(err != nil)

	d := tree(t)
	td, err := w.Watch(d)
	is.NoErr(err)
	is.NoErr(w.Close())
	is.True(td.Changed())
	_, err = w.Watch(d)
	is.True(err != nil)
}

// A tree closed in the background while the same directories are watched
// anew (the kernel gives the new tree the same descriptors): the close
// leaves the new tree's watches alone, so it reads unchanged until
// something changes, and then changed.
func TestCloseInTheBackgroundSparesANewWatchOfTheSameTree(t *testing.T) {
	is := is.New(t)
	w, err := New()
	is.NoErr(err)
	defer w.Close()
	dir := tree(t)
	for i := range 20 {
		old, err := w.Watch(dir)
		is.NoErr(err)
		done := make(chan struct{})
		go func() { old.Close(); close(done) }()
		fresh, err := w.Watch(dir)
		is.NoErr(err)
		<-done
		is.True(old.Changed())    // a closed tree reads as changed
		is.True(!fresh.Changed()) // its watches are intact (a removed one would report IN_IGNORED)
		is.NoErr(os.WriteFile(filepath.Join(dir, "a", "b", "new.txt"), []byte{byte(i)}, 0o644))
		is.True(fresh.Changed())
		fresh.Close()
	}
}
