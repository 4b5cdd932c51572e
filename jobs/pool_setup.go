package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// The warm pool pays for setup ahead: an entry is set up (files copied,
// setup commands run) when the pool fills it or moves it to a tip whose
// settings or setup inputs differ, and a task that claims an entry set up
// under the same key (grove.Settings.SetupKey: the settings and the setup
// inputs at its base) skips its setup stage. Task worktrees are never set
// up again by the pool.

// poolSetupDir is the setup directory of a pool entry under one key: a
// setup that ended there (done or failed) is never run again for that
// entry and key, also across a crash.
func poolSetupDir(home string, wsID int64, key string) string {
	return filepath.Join(home, "runs", fmt.Sprintf("pool-%d-%s", wsID, key))
}

// setUpEntry runs the setup of pool entry e (taken by this pass, clean, at
// e.BaseCommit) when it is not set up under the current key, then verifies
// it clean again (a setup that leaves untracked or modified files makes it
// unusable: false). A failed setup leaves the entry in the pool, not set up
// (a task that takes it runs setup itself and reports the failure), and is
// not run again for the same key.
func (d *Deps) setUpEntry(ctx context.Context, repo *gitops.Repo, e grove.Workspace) (clean bool, err error) {
	s, key, err := d.settingsAt(ctx, repo, e.BaseCommit)
	if err != nil {
		d.Logger.Warn("pool entry not set up: settings", "path", e.Path, "err", err)
		return true, nil
	}
	if key == "" || key == e.SetupKey {
		return true, nil
	}
	if e.SetupKey != "" {
		// Set up under other settings or inputs: not ready for tasks at
		// this commit until it is set up again.
		if err := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.SetSetupKey(ctx, e.ID, "") }); err != nil {
			return false, err
		}
	}
	d.forget(e.ID)
	env := AgentEnv(grove.Task{}, e, 0)
	res, err := d.runSetup(ctx, repo, s, e, setupRun{dir: poolSetupDir(d.Home, e.ID, key), env: env})
	if err != nil {
		return false, fmt.Errorf("set up pool entry %s: %w", e.Path, err)
	}
	if res.failed != "" {
		d.Logger.Warn("pool entry setup failed; tasks that take it run setup themselves", "path", e.Path, "err", res.failed)
		return d.verifyClean(ctx, repo, e)
	}
	grove.Failpoint("pool.after-setup")
	if clean, err = d.verifyClean(ctx, repo, e); err != nil || !clean {
		return clean, err
	}
	d.Logger.Info("pool entry set up", "path", e.Path, "key", key)
	return true, d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.SetSetupKey(ctx, e.ID, key) })
}

// entrySetUp reports whether pool entry e needs no setup now: nothing to
// set up, set up under the current key, or a setup under it already tried.
func (d *Deps) entrySetUp(ctx context.Context, repo *gitops.Repo, e grove.Workspace) bool {
	_, key, err := d.settingsAt(ctx, repo, e.BaseCommit)
	if err != nil || key == "" || key == e.SetupKey {
		return true
	}
	_, err = os.Stat(poolSetupDir(d.Home, e.ID, key))
	return err == nil
}
