package gitops

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// Settings are read at the given commit (not the checkout), overridden by
// git config grove.* with the source of each value; a malformed file or
// an unknown key is a usage error naming the file.
func TestReadSettingsAtCommitWithOverrides(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := newRepo(t)
	dir := r.Root
	first, err := r.ResolveCommit(ctx, "HEAD")
	is.NoErr(err)
	s, err := r.ReadSettings(ctx, first) // no file: defaults
	is.NoErr(err)
	is.True(!s.Prepares())
	is.Equal(s.Sources["setup"], "default")

	writeCommit(t, dir, grove.SettingsFile, "setup = [\"make deps\"]\ncopy = [\".env\"]\nsetup_inputs = [\"go.sum\"]\nsetup_timeout = \"2m\"\n")
	second, err := r.ResolveCommit(ctx, "HEAD")
	is.NoErr(err)
	is.NoErr(os.WriteFile(filepath.Join(dir, grove.SettingsFile), []byte("setup = [\"not committed\"]\n"), 0o644))
	s, err = r.ReadSettings(ctx, second)
	is.NoErr(err)
	is.Equal(s.Setup, []string{"make deps"}) // the commit's, not the checkout's
	is.Equal(s.Timeout().String(), "2m0s")
	is.True(strings.HasPrefix(s.Sources["setup"], ".grove.toml at "))
	s, err = r.ReadSettings(ctx, first)
	is.NoErr(err)
	is.Equal(len(s.Setup), 0) // the file did not exist at the first commit

	is.NoErr(r.SetSetting(ctx, "setup_inputs", []string{"package-lock.json", "go.sum"}))
	is.NoErr(r.SetSetting(ctx, "keep_ignored", nil)) // an empty list: keep nothing
	s, err = r.ReadSettings(ctx, second)
	is.NoErr(err)
	is.Equal(s.SetupInputs, []string{"package-lock.json", "go.sum"})
	is.Equal(s.Sources["setup_inputs"], "git config grove.setupinputs (local)")
	is.Equal(s.KeepIgnored, []string{})
	k1 := s.SetupKey(map[string]string{"go.sum": "a"})
	is.True(k1 != "" && k1 != s.SetupKey(map[string]string{"go.sum": "b"}))

	is.True(r.SetSetting(ctx, "setup_timeout", []string{"soon"}) != nil)
	is.True(r.SetSetting(ctx, "copy", []string{"../outside"}) != nil)
	is.NoErr(r.UnsetSetting(ctx, "setup_inputs"))
	s, err = r.ReadSettings(ctx, second)
	is.NoErr(err)
	is.Equal(s.SetupInputs, []string{"go.sum"})

	writeCommit(t, dir, grove.SettingsFile, "setpu = [\"typo\"]\n")
	third, err := r.ResolveCommit(ctx, "HEAD")
	is.NoErr(err)
	_, err = r.ReadSettings(ctx, third)
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "unknown key setpu"))
	is.Equal(grove.HintOf(err), "known keys: setup, copy, setup_inputs, setup_timeout, keep_ignored")
}

// Copies of ignored files are real copies (another inode; editing one
// leaves the original alone); tracked and untracked-but-not-ignored
// matches are not copied; an unchanged copy is deletable, an edited one not.
func TestCopyIgnored(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := newRepo(t)
	dir := r.Root
	writeCommit(t, dir, ".gitignore", ".env\ncache/\n")
	is.NoErr(os.WriteFile(filepath.Join(dir, ".env"), []byte("SECRET=1\n"), 0o600))
	is.NoErr(os.MkdirAll(filepath.Join(dir, "cache", "sub"), 0o755))
	is.NoErr(os.WriteFile(filepath.Join(dir, "cache", "sub", "big.bin"), []byte("cached"), 0o644))
	is.NoErr(os.WriteFile(filepath.Join(dir, ".envrc"), []byte("untracked, not ignored"), 0o644))
	dst := t.TempDir()
	res, err := r.CopyIgnored(ctx, dst, []string{".env*", "cache", ".gitignore"})
	is.NoErr(err)
	is.Equal(res.Paths, []string{".env", "cache"})
	is.Equal(res.Skipped, []string{".envrc", ".gitignore"})
	is.Equal(res.Files, 2)
	var a, b syscall.Stat_t
	is.NoErr(syscall.Stat(filepath.Join(dir, ".env"), &a))
	is.NoErr(syscall.Stat(filepath.Join(dst, ".env"), &b))
	is.True(a.Ino != b.Ino)
	is.Equal(b.Mode&0o777, uint32(0o600))
	is.Equal(r.UnchangedCopies(dst, []string{".env*", "cache"}), []string{"/.env", "/cache"})
	is.NoErr(os.WriteFile(filepath.Join(dst, "cache", "sub", "big.bin"), []byte("edited"), 0o644))
	is.Equal(r.UnchangedCopies(dst, []string{".env*", "cache"}), []string{"/.env"})
	got, err := os.ReadFile(filepath.Join(dir, "cache", "sub", "big.bin"))
	is.NoErr(err)
	is.Equal(string(got), "cached") // the user's file is untouched
}

// writeCommit writes a file at the repository's root and commits it.
func writeCommit(t *testing.T, dir, name, content string) {
	t.Helper()
	write(t, filepath.Join(dir, name), content)
	git(t, dir, "add", name)
	git(t, dir, "commit", "-q", "-m", "write "+name)
}

// allow_write widens the sandbox, so it is box-only: git config (grove
// repo set) sets it, a committed .grove.toml naming it is refused, and a
// relative path or "/" is refused.
func TestAllowWriteIsBoxOnly(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := newRepo(t)
	head, err := r.ResolveCommit(ctx, "HEAD")
	is.NoErr(err)
	s, err := r.ReadSettings(ctx, head)
	is.NoErr(err)
	is.Equal(len(s.AllowWrite), 0)
	is.NoErr(r.SetSetting(ctx, grove.KeyAllowWrite, []string{"/srv/cache", "/opt/tool/state"}))
	s, err = r.ReadSettings(ctx, head)
	is.NoErr(err)
	is.Equal(s.AllowWrite, []string{"/srv/cache", "/opt/tool/state"})
	is.Equal(s.Sources[grove.KeyAllowWrite], "git config grove.allowwrite (local)")
	for _, bad := range []string{"relative/dir", "/", ""} {
		err := r.SetSetting(ctx, grove.KeyAllowWrite, []string{bad})
		var ue *grove.UserError
		is.True(errors.As(err, &ue)) // refused with a hint
	}
	s, err = r.ReadSettings(ctx, head)
	is.NoErr(err)
	is.Equal(len(s.AllowWrite), 2) // a refused value changed nothing

	writeCommit(t, r.Root, grove.SettingsFile, "allow_write = [\"/\"]\n")
	head, err = r.ResolveCommit(ctx, "HEAD")
	is.NoErr(err)
	_, err = r.ReadSettings(ctx, head)
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "per-box setting"))
}
