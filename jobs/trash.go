package jobs

import (
	"context"
	"time"

	"github.com/grove-dev/grove/gitops"
)

// Trash retention defaults (grove serve --trash-keep, --trash-max).
const (
	DefaultTrashKeep       = 24 * time.Hour
	DefaultTrashMax  int64 = 10 << 30
)

// trashPolicy is the retention d asks for.
func (d *Deps) trashPolicy() (keep time.Duration, max int64) {
	keep, max = d.TrashKeep, d.TrashMax
	if keep <= 0 {
		keep = DefaultTrashKeep
	}
	if max == 0 {
		max = DefaultTrashMax
	}
	return keep, max
}

// purgeTrashPass is the reaper's purge: PurgeTrash, unless dryRun.
func purgeTrashPass(ctx context.Context, d *Deps, now time.Time, dryRun bool) {
	if !dryRun {
		_, _ = PurgeTrash(ctx, d, now) // it logs what it did
	}
}

// PurgeTrash applies the trash's retention at now (gitops.PurgeTrash with
// d's TrashKeep and TrashMax) and logs each purge, each entry kept over
// budget because it is younger than gitops.MinAge, and each entry never
// purged automatically. The reaper runs it every pass.
func PurgeTrash(ctx context.Context, d *Deps, now time.Time) (gitops.PurgeReport, error) {
	keep, max := d.trashPolicy()
	rep, err := gitops.PurgeTrash(ctx, d.TrashDir(), now, keep, max)
	for _, p := range rep.Purged {
		d.Logger.Info("trash purged", "entry", p.Name(), "why", p.Why, "age", p.Age.Round(time.Second),
			"bytes", p.Size, "task", p.Manifest.Task, "session", p.Manifest.Session, "path", p.Manifest.Path)
	}
	for _, y := range rep.Young {
		d.Logger.Warn("trash over budget: entry younger than an hour kept", "entry", y.Name(),
			"age", y.Age.Round(time.Second), "bytes", y.Size, "trash_bytes", rep.Bytes, "max", max)
	}
	for _, k := range rep.Kept {
		if k.Problem != "in use" {
			d.Logger.Warn("trash entry kept", "entry", k.Name(), "why", k.Problem)
		}
	}
	for _, name := range rep.Resumed {
		d.Logger.Info("trash: finished an interrupted operation", "entry", name)
	}
	if err != nil {
		d.Logger.Warn("trash purge", "err", err)
	}
	return rep, err
}

// TrashOverBudget is what doctor reports: the entries the budget wanted
// gone that are younger than gitops.MinAge, and the bytes the trash holds
// (read-only: nothing is purged).
func TrashOverBudget(trashDir string, now time.Time, max int64) (young []gitops.TrashInfo, bytes int64, err error) {
	list, err := gitops.ListTrash(trashDir, now)
	if err != nil {
		return nil, 0, err
	}
	for _, e := range list {
		bytes += e.Size
	}
	over := bytes
	for _, e := range list { // oldest first, as the purge goes
		if max <= 0 || over <= max {
			break
		}
		if e.Problem != "" {
			continue
		}
		if e.Age < gitops.MinAge {
			young = append(young, e)
			continue
		}
		over -= e.Size
	}
	return young, bytes, nil
}
