package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/grove-dev/grove"
)

// TrashInfo is one trash entry as ListTrash reads it.
type TrashInfo struct {
	Dir      string        `json:"dir"`
	Manifest TrashManifest `json:"manifest"`
	// Age is how long ago it was removed (from the manifest's time, or
	// the directory's mtime when there is no readable manifest).
	Age time.Duration `json:"age_ns"`
	// Size is the bytes it holds (measured now when the manifest has none).
	Size int64 `json:"size"`
	// Problem says why it is never purged automatically: an unreadable
	// manifest, a KEPT marker, an unfinished operation. "" for none.
	Problem string `json:"problem,omitempty"`
}

// Name is the entry's name.
func (i TrashInfo) Name() string { return filepath.Base(i.Dir) }

// ListTrash lists the entries of trashDir, oldest first, without locking
// them (a read-only view; sizes not in a manifest are measured).
func ListTrash(trashDir string, now time.Time) ([]TrashInfo, error) {
	ents, err := os.ReadDir(trashDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list trash %s: %w", trashDir, err)
	}
	var out []TrashInfo
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		out = append(out, inspect(filepath.Join(trashDir, e.Name()), now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Age > out[j].Age })
	return out, nil
}

// inspect reads the entry at dir.
func inspect(dir string, now time.Time) TrashInfo {
	info := TrashInfo{Dir: dir}
	m, err := readManifest(dir)
	if err != nil {
		info.Problem = err.Error()
		if st, serr := os.Stat(dir); serr == nil {
			info.Age = now.Sub(st.ModTime())
		}
		info.Size = DiskUsage(dir)
		return info
	}
	info.Manifest, info.Age, info.Size = m, now.Sub(m.Time), m.Size
	if info.Size < 0 {
		info.Size = DiskUsage(dir)
		if m.Step == StepDone {
			info.Manifest.Size = info.Size
			recordSize(dir, info.Size)
		}
	}
	if why, ok := kept(dir); ok {
		info.Problem = why
	} else if m.Step != StepDone {
		info.Problem = "unfinished: " + m.Step
	}
	return info
}

// recordSize writes size into the manifest of the finished entry at dir
// when nothing else holds the entry (a retire measures nothing: walking a
// 100k-file worktree took 1.2 s of the close; the first listing measures
// it, and this keeps the answer). Busy or failing, it leaves the manifest
// as it was: the next listing measures again.
func recordSize(dir string, size int64) {
	t, ok, err := lockEntry(dir)
	if err != nil || !ok {
		return
	}
	defer t.unlock()
	m, err := readManifest(dir)
	if err != nil || m.Step != StepDone || m.Size >= 0 {
		return
	}
	m.Size = size
	_ = t.write(&m)
}

// PurgeReport is what PurgeTrash did.
type PurgeReport struct {
	// Purged are the entries deleted, with Why: "expired" or "over budget".
	Purged []Purged `json:"purged"`
	// Young are entries the budget wanted gone but that are younger than
	// MinAge: kept, for doctor to show.
	Young []TrashInfo `json:"young,omitempty"`
	// Kept are entries that are never purged automatically (Problem says
	// why) or that an operation holds right now.
	Kept []TrashInfo `json:"kept,omitempty"`
	// Resumed are entries an interrupted retire or purge left, finished.
	Resumed []string `json:"resumed,omitempty"`
	// Bytes is what the trash holds afterwards.
	Bytes int64 `json:"bytes"`
}

// Purged is one entry a purge deleted.
type Purged struct {
	TrashInfo
	Why string `json:"why"`
}

// MinAge is the age under which an entry is never purged for space.
const MinAge = time.Hour

// PurgeTrash applies the retention policy to trashDir: an interrupted
// retire is finished and an interrupted purge completed first; then
// entries older than keep are purged, then, oldest first, entries while
// the trash holds more than max bytes (max <= 0: no budget), except that
// an entry younger than MinAge is never purged for space (it is reported
// in Young). An entry some operation holds (its lock) is skipped; an
// entry whose manifest or KEPT marker cannot be read, or that is marked
// KEPT, is never purged (Kept). The caller logs each purge.
//
// A purge marks the entry StepPurging, deletes its pins (failpoint
// purge.after-unpin), then its files; a purge that dies midway is
// completed by the next one.
func PurgeTrash(ctx context.Context, trashDir string, now time.Time, keep time.Duration, max int64) (PurgeReport, error) {
	rep := PurgeReport{Purged: []Purged{}}
	list, err := ListTrash(trashDir, now)
	if err != nil {
		return rep, err
	}
	var errs []error
	var live []TrashInfo // candidates for the budget, oldest first
	for _, info := range list {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		t, ok, err := lockEntry(info.Dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			if exists(info.Dir) {
				info.Problem = "in use"
				rep.Kept = append(rep.Kept, info)
				rep.Bytes += info.Size
			}
			continue
		}
		info = inspect(info.Dir, now) // again, under the lock
		info, done, err := settle(ctx, t, info, now)
		if err != nil {
			errs = append(errs, err)
		}
		if done != "" {
			rep.Resumed = append(rep.Resumed, done)
		}
		switch {
		case !exists(info.Dir):
			t.unlock()
		case info.Problem != "":
			t.unlock()
			rep.Kept = append(rep.Kept, info)
			rep.Bytes += info.Size
		case keep > 0 && info.Age > keep:
			err := purgeLocked(ctx, t, info.Manifest)
			if err != nil {
				errs = append(errs, err)
				rep.Bytes += info.Size
				break
			}
			rep.Purged = append(rep.Purged, Purged{TrashInfo: info, Why: "expired"})
		default:
			t.unlock()
			live = append(live, info)
			rep.Bytes += info.Size
		}
	}
	for _, info := range live {
		if max <= 0 || rep.Bytes <= max {
			break
		}
		if info.Age < MinAge {
			rep.Young = append(rep.Young, info)
			continue
		}
		t, ok, err := lockEntry(info.Dir)
		if err != nil || !ok {
			continue
		}
		if m, err := readManifest(info.Dir); err != nil || m.Step != StepDone {
			t.unlock()
			continue
		}
		if err := purgeLocked(ctx, t, info.Manifest); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Bytes -= info.Size
		rep.Purged = append(rep.Purged, Purged{TrashInfo: info, Why: "over budget"})
	}
	return rep, errors.Join(errs...)
}

// settle finishes what a crash left on a locked entry: a retire is
// resumed, a purge completed (the entry is then gone), an entry with no
// manifest and nothing in it that is older than MinAge (a retire that
// died before its first write) is removed. It returns the entry as it is
// now and the name of an entry it finished.
func settle(ctx context.Context, t *trashEntry, info TrashInfo, now time.Time) (TrashInfo, string, error) {
	m := info.Manifest
	switch {
	case m.Step == "" && emptyAndOld(t.dir) && !exists(t.worktree()) && !exists(t.admin()) && !exists(filepath.Join(t.dir, trashKept)):
		if _, err := os.Stat(filepath.Join(t.dir, trashManifest)); !errors.Is(err, fs.ErrNotExist) {
			return info, "", nil // a manifest we cannot read: kept
		}
		_ = os.Remove(filepath.Join(t.dir, trashLock))
		_ = os.Remove(filepath.Join(t.dir, trashManifest+".tmp"))
		if err := os.Remove(t.dir); err != nil {
			return info, "", fmt.Errorf("remove empty trash entry %s: %w", t.dir, err)
		}
		return info, t.name, nil
	case m.Step == StepPurging:
		if _, k := kept(t.dir); k {
			return info, "", nil
		}
		return info, t.name, purgeLocked(ctx, t, m)
	case m.Step == StepBegin || m.Step == StepMoved || m.Step == StepUnregistered:
		if _, k := kept(t.dir); k {
			return info, "", nil
		}
		r, err := Open(ctx, m.Repo)
		if err != nil {
			return info, "", fmt.Errorf("resume retire in %s: %w", t.dir, err)
		}
		if err := r.resume(ctx, t, &m); err != nil {
			return inspect(t.dir, now), "", fmt.Errorf("resume retire in %s: %w", t.dir, err)
		}
		return inspect(t.dir, now), t.name, nil
	}
	return info, "", nil
}

// emptyAndOld reports whether the entry dir was made more than MinAge ago
// by the real clock (never a caller's: a retire makes its entry and locks
// it a moment later, and must not lose it to a purge in between).
func emptyAndOld(dir string) bool {
	st, err := os.Stat(dir)
	return err == nil && time.Since(st.ModTime()) > MinAge
}

// purgeLocked deletes the locked entry t: marked StepPurging first (an
// error writing it keeps the entry), its pins, then its files.
func purgeLocked(ctx context.Context, t *trashEntry, m TrashManifest) error {
	defer t.unlock()
	if m.Step != StepPurging {
		m.Step = StepPurging
		if err := t.write(&m); err != nil {
			return fmt.Errorf("purge %s: %w", t.dir, err)
		}
	}
	grove.Failpoint("purge.after-mark")
	if err := unpin(ctx, m.CommonDir, t.name); err != nil {
		return fmt.Errorf("purge %s: %w", t.dir, err)
	}
	grove.Failpoint("purge.after-unpin")
	if err := removeAllWritable(t.dir); err != nil {
		return fmt.Errorf("purge %s: %w", t.dir, err)
	}
	return nil
}

// FindTrashEntry finds the entry named entry, or the newest entry of the
// task with that id. A *grove.UserError wrapping grove.ErrNotFound when
// there is none.
func FindTrashEntry(trashDir, entry string) (string, error) {
	if entry == "" || entry == "." || entry == ".." || filepath.Base(entry) != entry {
		return "", grove.Userf(grove.ErrUsage, "grove trash ls shows the entries", "invalid trash entry %q", entry)
	}
	dir := filepath.Join(trashDir, entry)
	if st, err := os.Lstat(dir); err == nil && st.IsDir() {
		return dir, nil
	}
	list, err := ListTrash(trashDir, time.Now())
	if err != nil {
		return "", err
	}
	found := ""
	for _, info := range list { // oldest first: the last match is the newest
		m := info.Manifest
		// grove names a task's worktree by its task id: an entry written
		// without the task's id still matches its directory's name.
		if m.Task == entry || (m.Task == "" && m.Path != "" && filepath.Base(m.Path) == entry) {
			found = info.Dir
		}
	}
	if found == "" {
		return "", grove.Userf(grove.ErrNotFound, "grove trash ls shows the entries", "no trash entry %s", entry)
	}
	return found, nil
}

// PurgeEntry deletes the entry at dir by hand, whatever its age: also an
// entry whose manifest cannot be read or that is marked KEPT (the user
// asked for exactly this one). An entry an operation holds is refused.
func PurgeEntry(ctx context.Context, dir string) (TrashInfo, error) {
	t, ok, err := lockEntry(dir)
	if err != nil {
		return TrashInfo{}, fmt.Errorf("purge %s: %w", dir, err)
	}
	if !ok {
		if !exists(dir) {
			return TrashInfo{}, grove.Userf(grove.ErrNotFound, "grove trash ls shows the entries", "no trash entry %s", filepath.Base(dir))
		}
		return TrashInfo{}, grove.Userf(grove.ErrConflict, "try again in a moment", "trash entry %s is in use", filepath.Base(dir))
	}
	info := inspect(dir, time.Now())
	m := info.Manifest
	m.Entry = t.name
	return info, purgeLocked(ctx, t, m)
}

// SweepTrash finishes what a crash left in trashDir, at daemon start: an
// interrupted retire is completed (or, if it had moved nothing, its entry
// dropped) and an interrupted purge finished. It deletes nothing else:
// entries are kept until PurgeTrash's retention says so. Entries an
// operation holds are skipped. Problems (KEPT entries, unreadable
// manifests) are returned in the error, the entries kept.
func SweepTrash(trashDir string) error {
	ctx := context.Background()
	list, err := ListTrash(trashDir, time.Now())
	if err != nil {
		return err
	}
	var errs []error
	for _, info := range list {
		t, ok, err := lockEntry(info.Dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		info, _, err = settle(ctx, t, inspect(info.Dir, time.Now()), time.Now())
		t.unlock()
		if err != nil {
			errs = append(errs, err)
		}
		if exists(info.Dir) && info.Problem != "" {
			errs = append(errs, fmt.Errorf("trash entry %s: %s", info.Dir, info.Problem))
		}
	}
	return errors.Join(errs...)
}
