package gitops

import (
	"compress/zlib"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/grove-dev/grove"
)

// A private object store lets a sandboxed agent commit without write
// access to the repository's shared object store (where it could
// truncate or delete other people's objects). The agent's git writes new
// objects into the private directory (GIT_OBJECT_DIRECTORY) and reads the
// shared store as an alternate; while it runs, the shared store lists the
// private directory in objects/info/alternates, so the daemon, the gate
// and the user's git can read the agent's commits. When the run ends,
// SettleObjects moves the objects into the shared store.

// alternatesFile is the shared store's list of alternate object dirs.
func (r *Repo) alternatesFile() string {
	return filepath.Join(r.CommonDir, "objects", "info", "alternates")
}

// AddAlternate creates the private object directory dir and lists it in
// the shared store's alternates, under the alternates lock. Idempotent.
func (r *Repo) AddAlternate(ctx context.Context, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "pack"), 0o755); err != nil {
		return fmt.Errorf("create private object dir: %w", err)
	}
	unlock, err := r.lockAlternates(ctx)
	if err != nil {
		return fmt.Errorf("list alternate %s: %w", dir, err)
	}
	defer unlock()
	lines, err := r.readAlternates()
	if err != nil {
		return err
	}
	for _, l := range lines {
		if l == dir {
			return nil
		}
	}
	return r.writeAlternates(append(lines, dir))
}

// alternatesLock guards grove's read-modify-write of the alternates file
// (its writes are atomic renames, so readers need no lock). It is not the
// repository lock: an agent's start must not wait behind a worktree being
// created or removed (a pool refill starts right when a task claims its
// entry).
const alternatesLock = "grove-alternates.lock"

// lockAlternates takes the alternates lock (a flock on a descriptor of its
// own: exclusive across goroutines and processes alike).
func (r *Repo) lockAlternates(ctx context.Context) (unlock func(), err error) {
	f, err := flockFile(ctx, filepath.Join(r.CommonDir, alternatesLock))
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

func (r *Repo) readAlternates() ([]string, error) {
	b, err := os.ReadFile(r.alternatesFile())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read alternates: %w", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// writeAlternates replaces the alternates file atomically (a reader sees
// the old list or the new one); an empty list removes it.
func (r *Repo) writeAlternates(lines []string) error {
	path := r.alternatesFile()
	if len(lines) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove alternates: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write alternates: %w", err)
	}
	tmp := path + ".grove-tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write alternates: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write alternates: %w", err)
	}
	return nil
}

// SettleObjects moves the objects of the private store dir into the
// shared store, then unlists dir from the alternates and deletes it. Call
// it only once nothing writes dir any more (the run's processes are
// gone). Every step is idempotent and a crash between two leaves the
// repository readable: objects are linked (an existing object is never
// replaced, EEXIST is fine) before dir stops being an alternate, and dir
// is deleted only after. A loose object whose content does not hash to
// its name, or a pack that does not verify, is not moved (it could
// shadow a real object later); rejected names them.
func (r *Repo) SettleObjects(ctx context.Context, dir string) (rejected []string, err error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, r.unlistAlternate(ctx, dir)
	}
	shared := filepath.Join(r.CommonDir, "objects")
	rejected, err = settleLoose(dir, shared)
	if err != nil {
		return rejected, err
	}
	bad, err := r.settlePacks(ctx, dir, shared)
	rejected = append(rejected, bad...)
	if err != nil {
		return rejected, err
	}
	grove.Failpoint("objects.after-link")
	if err := r.unlistAlternate(ctx, dir); err != nil {
		return rejected, err
	}
	grove.Failpoint("objects.after-unlist")
	if err := os.RemoveAll(dir); err != nil {
		return rejected, fmt.Errorf("remove private object dir: %w", err)
	}
	return rejected, nil
}

func (r *Repo) unlistAlternate(ctx context.Context, dir string) error {
	unlock, err := r.lockAlternates(ctx)
	if err != nil {
		return fmt.Errorf("unlist alternate %s: %w", dir, err)
	}
	defer unlock()
	lines, err := r.readAlternates()
	if err != nil {
		return err
	}
	kept := lines[:0:0]
	for _, l := range lines {
		if l != dir {
			kept = append(kept, l)
		}
	}
	if len(kept) == len(lines) {
		return nil
	}
	return r.writeAlternates(kept)
}

// settleLoose links every valid loose object of dir into shared.
func settleLoose(dir, shared string) (rejected []string, err error) {
	fans, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read private object dir: %w", err)
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 || !isHex(fan.Name()) {
			continue
		}
		objs, err := os.ReadDir(filepath.Join(dir, fan.Name()))
		if err != nil {
			return rejected, fmt.Errorf("read private object dir: %w", err)
		}
		for _, o := range objs {
			name := fan.Name() + o.Name()
			if !o.Type().IsRegular() || !isHex(o.Name()) || (len(name) != 40 && len(name) != 64) {
				continue // git's temporary files, anything else
			}
			src := filepath.Join(dir, fan.Name(), o.Name())
			if ok, err := looseObjectValid(src, name); err != nil || !ok {
				rejected = append(rejected, name)
				continue
			}
			if err := os.MkdirAll(filepath.Join(shared, fan.Name()), 0o755); err != nil {
				return rejected, fmt.Errorf("settle object %s: %w", name, err)
			}
			if err := os.Link(src, filepath.Join(shared, fan.Name(), o.Name())); err != nil && !errors.Is(err, fs.ErrExist) {
				return rejected, fmt.Errorf("settle object %s: %w", name, err)
			}
		}
	}
	return rejected, nil
}

// looseObjectValid reports whether the loose object file at path hashes
// to name (SHA-1 for 40 hex digits, SHA-256 for 64).
func looseObjectValid(path, name string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	zr, err := zlib.NewReader(f)
	if err != nil {
		return false, nil
	}
	defer zr.Close()
	var h hash.Hash = sha1.New()
	if len(name) == 64 {
		h = sha256.New()
	}
	if _, err := io.Copy(h, zr); err != nil {
		return false, nil
	}
	return hex.EncodeToString(h.Sum(nil)) == name, nil
}

// settlePacks links each pack of dir that git verifies into shared: the
// .pack first, its .idx last, so a reader never finds an index without
// its pack.
func (r *Repo) settlePacks(ctx context.Context, dir, shared string) (rejected []string, err error) {
	idxs, _ := filepath.Glob(filepath.Join(dir, "pack", "pack-*.idx"))
	for _, idx := range idxs {
		pack := strings.TrimSuffix(idx, ".idx") + ".pack"
		if _, err := run(ctx, r.Root, "verify-pack", idx); err != nil {
			rejected = append(rejected, filepath.Base(pack))
			continue
		}
		for _, src := range []string{pack, idx} {
			dst := filepath.Join(shared, "pack", filepath.Base(src))
			if err := os.Link(src, dst); err != nil && !errors.Is(err, fs.ErrExist) {
				return rejected, fmt.Errorf("settle pack %s: %w", filepath.Base(src), err)
			}
		}
	}
	return rejected, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}
