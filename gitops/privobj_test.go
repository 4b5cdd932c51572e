package gitops

import (
	"bytes"
	"compress/zlib"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestSettleObjects: an object written into a private store is readable
// through the shared store while listed, and in the shared store after
// SettleObjects; a loose object whose content does not hash to its name is
// not moved (it would shadow the real one); an object the shared store
// already has is left as it is; the private store is unlisted and gone.
func TestSettleObjects(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := newRepo(t)
	priv := filepath.Join(r.CommonDir, "worktrees", "x", "grove-objects")
	is.NoErr(r.AddAlternate(ctx, priv))
	is.NoErr(r.AddAlternate(ctx, priv)) // idempotent
	alt := read(t, r.alternatesFile())
	is.Equal(strings.Count(alt, priv), 1)

	hash := func(content string) string {
		cmd := exec.Command("git", "hash-object", "-w", "--stdin")
		cmd.Dir = r.Root
		cmd.Env = append(os.Environ(), "GIT_OBJECT_DIRECTORY="+priv,
			"GIT_ALTERNATE_OBJECT_DIRECTORIES="+filepath.Join(r.CommonDir, "objects"))
		cmd.Stdin = strings.NewReader(content)
		out, err := cmd.Output()
		is.NoErr(err)
		return strings.TrimSpace(string(out))
	}
	good := hash("agent's work\n")
	is.Equal(git(t, r.Root, "cat-file", "blob", good), "agent's work") // readable while listed

	// A forged object: the name of content the user may write later,
	// holding something else.
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_, _ = zw.Write([]byte("blob 4\x00evil"))
	is.NoErr(zw.Close())
	future := "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391" // the empty blob's name
	is.NoErr(os.MkdirAll(filepath.Join(priv, future[:2]), 0o755))
	is.NoErr(os.WriteFile(filepath.Join(priv, future[:2], future[2:]), z.Bytes(), 0o444))

	rejected, err := r.SettleObjects(ctx, priv)
	is.NoErr(err)
	is.Equal(rejected, []string{future})
	_, err = os.Stat(filepath.Join(r.CommonDir, "objects", future[:2], future[2:]))
	is.True(os.IsNotExist(err)) // not taken
	_, err = os.Stat(filepath.Join(r.CommonDir, "objects", good[:2], good[2:]))
	is.NoErr(err) // taken
	_, err = os.Stat(priv)
	is.True(os.IsNotExist(err))
	_, err = os.Stat(r.alternatesFile())
	is.True(os.IsNotExist(err)) // the only entry: the file goes
	is.Equal(git(t, r.Root, "cat-file", "blob", good), "agent's work")
	// Again: nothing to do.
	rejected, err = r.SettleObjects(ctx, priv)
	is.NoErr(err)
	is.Equal(len(rejected), 0)
}

// An agent's start lists its private store while a worktree is being
// created or removed (the repository lock held): the alternates have a
// lock of their own. Two concurrent listings both land.
func TestAddAlternateDoesNotWaitForRepositoryLock(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	unlock, err := r.Lock(context.Background())
	is.NoErr(err)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a := filepath.Join(r.CommonDir, "worktrees", "a", "grove-objects")
	b := filepath.Join(r.CommonDir, "worktrees", "b", "grove-objects")
	errs := make(chan error, 2)
	go func() { errs <- r.AddAlternate(ctx, a) }()
	go func() { errs <- r.AddAlternate(ctx, b) }()
	is.NoErr(<-errs)
	is.NoErr(<-errs)
	got, err := r.readAlternates()
	is.NoErr(err)
	is.Equal(len(got), 2)
}
