package gitops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// CopyResult says what CopyIgnored did.
type CopyResult struct {
	Paths   []string `json:"paths"`   // top-level matches copied (relative, '/')
	Skipped []string `json:"skipped"` // matches not copied: tracked or not ignored, or an absolute symlink
	Files   int      `json:"files"`   // regular files written
	Bytes   int64    `json:"bytes"`
	Cloned  int      `json:"cloned"` // files cloned copy-on-write (FICLONE)
}

// matches returns the paths under root matching patterns (relative, '/'
// separated, sorted, deduplicated).
func matches(root string, patterns []string) []string {
	var out []string
	for _, p := range patterns {
		ms, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(p)))
		if err != nil {
			continue // Validate rejects what Glob cannot parse only at use; skip it
		}
		for _, m := range ms {
			rel, err := filepath.Rel(root, m)
			if err != nil || rel == "." || strings.HasPrefix(rel, "..") || rel == ".git" || strings.HasPrefix(rel, ".git"+string(filepath.Separator)) {
				continue
			}
			out = append(out, filepath.ToSlash(rel))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CopyStamps identifies the current content of the files the copy
// patterns match in root (size and modification time of each top-level
// match): a change means a setup made with the old copies is out of date.
func CopyStamps(root string, patterns []string) map[string]string {
	out := map[string]string{}
	for _, m := range matches(root, patterns) {
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(m)))
		if err != nil {
			continue
		}
		out[m] = fmt.Sprintf("%d:%d:%v", fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
	}
	return out
}

// CopyIgnored copies into the worktree dst the files and directories of
// the main checkout that patterns match and that git ignores there
// (tracked or merely untracked files are never copied: git owns the
// first, the second are the user's work in progress). Files are copies,
// never hard links, so nothing the agent does reaches the user's files:
// cloned copy-on-write (FICLONE) where the filesystem supports it, copied
// otherwise. A relative symlink is recreated; an absolute one is skipped
// (it would lead the agent to the user's files). Existing files in dst are
// replaced (a repeated copy after a crash converges).
func (r *Repo) CopyIgnored(ctx context.Context, dst string, patterns []string) (CopyResult, error) {
	var res CopyResult
	ms := matches(r.Root, patterns)
	if len(ms) == 0 {
		return res, nil
	}
	ignored, err := r.ignoredOf(ctx, ms)
	if err != nil {
		return res, err
	}
	for _, m := range ms {
		if !ignored[m] {
			res.Skipped = append(res.Skipped, m)
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := cloneTree(filepath.Join(r.Root, filepath.FromSlash(m)), filepath.Join(dst, filepath.FromSlash(m)), &res); err != nil {
			return res, fmt.Errorf("copy %s into %s: %w", m, dst, err)
		}
		res.Paths = append(res.Paths, m)
	}
	return res, nil
}

// ignoredOf asks git which of paths (relative to the main checkout) it
// ignores there (not tracked, matched by an ignore rule).
func (r *Repo) ignoredOf(ctx context.Context, paths []string) (map[string]bool, error) {
	in := strings.Join(paths, "\x00") + "\x00"
	out, err := runGit(ctx, r.Root, nil, bytes.NewReader([]byte(in)), "check-ignore", "-z", "--stdin")
	var ge *GitError
	if err != nil && !(errors.As(err, &ge) && ge.ExitCode == 1) {
		return nil, fmt.Errorf("check which files are ignored: %w", err)
	}
	got := map[string]bool{}
	for _, p := range fields0(out) {
		got[strings.TrimSuffix(p, "/")] = true
	}
	return got, nil
}

// cloneTree copies src (file, directory or symlink) to dst.
func cloneTree(src, dst string, res *CopyResult) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				res.Skipped = append(res.Skipped, p)
				return nil
			}
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			_ = os.Remove(to)
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			cloned, err := cloneFile(p, to, info.Mode().Perm())
			if err != nil {
				return err
			}
			res.Files++
			res.Bytes += info.Size()
			if cloned {
				res.Cloned++
			}
			return nil
		default:
			return nil // sockets, FIFOs, devices: not copied
		}
	})
}

// cloneFile writes a copy of src at dst (through a temporary file renamed
// over dst), cloned copy-on-write when the filesystem supports it.
func cloneFile(src, dst string, mode fs.FileMode) (cloned bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	tmp := dst + ".grove-copy"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(tmp)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		cloned = true
	} else if _, err = io.Copy(out, in); err != nil {
		return false, err
	}
	if err = out.Close(); err != nil {
		return false, err
	}
	if err = os.Chmod(tmp, mode); err != nil {
		return false, err
	}
	return cloned, os.Rename(tmp, dst)
}

// UnchangedCopies returns the paths in the worktree dst that the copy
// patterns match and whose content is still the same as in the main
// checkout (files byte for byte, directories file by file, symlinks by
// target), as root-anchored keep patterns ("/.env"): deleting them loses
// nothing, the main checkout has them. A path that cannot be read or
// compared is left out (at risk).
func (r *Repo) UnchangedCopies(dst string, patterns []string) []string {
	var out []string
	for _, m := range matches(dst, patterns) {
		if sameCopy(filepath.Join(r.Root, filepath.FromSlash(m)), filepath.Join(dst, filepath.FromSlash(m))) {
			out = append(out, "/"+m)
		}
	}
	return out
}

// sameCopy reports whether b holds exactly what a holds.
func sameCopy(a, b string) bool {
	seen := 0
	err := filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(b, p)
		if err != nil {
			return err
		}
		if !sameEntry(filepath.Join(a, rel), p, d) {
			return errDiffers
		}
		seen++
		return nil
	})
	if err != nil {
		return false
	}
	n := 0 // a holds nothing b lacks (b's entries all matched a's)
	err = filepath.WalkDir(a, func(string, fs.DirEntry, error) error { n++; return nil })
	return err == nil && n == seen
}

var errDiffers = errors.New("differs")

func sameEntry(a, b string, d fs.DirEntry) bool {
	ai, err := os.Lstat(a)
	if err != nil {
		return false
	}
	bi, err := d.Info()
	if err != nil || ai.Mode().Type() != bi.Mode().Type() {
		return false
	}
	switch {
	case bi.IsDir():
		return true
	case bi.Mode()&fs.ModeSymlink != 0:
		ta, err1 := os.Readlink(a)
		tb, err2 := os.Readlink(b)
		return err1 == nil && err2 == nil && ta == tb
	case bi.Mode().IsRegular():
		if ai.Size() != bi.Size() {
			return false
		}
		ba, err1 := os.ReadFile(a)
		bb, err2 := os.ReadFile(b)
		return err1 == nil && err2 == nil && bytes.Equal(ba, bb)
	}
	return false
}
