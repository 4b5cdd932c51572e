package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/scheduler"
	"github.com/grove-dev/grove/store"
)

// databaseFlagHelp documents --database (a persistent flag: every command
// talks to the same database as the daemon).
const databaseFlagHelp = "PostgreSQL URL (postgres://user@host/db) shared by several grove hosts (default $GROVE_DATABASE; empty: SQLite in the home)"

// databaseURL is the database every command uses: --database, else
// $GROVE_DATABASE, else "" (SQLite in the home).
func (a *app) databaseURL() string {
	if a.database != "" {
		return a.database
	}
	return os.Getenv("GROVE_DATABASE")
}

// hostFile records, in the home, the host name the daemon serves as, so
// that CLI commands run against that home agree with it without --host.
const hostFile = "host"

// hostName is this process's host among the hosts sharing a PostgreSQL
// database: serve --host, else $GROVE_HOST, else the name the home's
// daemon recorded, else the machine's name. Call it after homeDir.
func (a *app) hostName() string {
	if a.host != "" {
		return a.host
	}
	if h := os.Getenv("GROVE_HOST"); h != "" {
		return h
	}
	if a.home != "" {
		if b, err := os.ReadFile(filepath.Join(a.home, hostFile)); err == nil {
			if h := strings.TrimSpace(string(b)); h != "" {
				return h
			}
		}
	}
	return store.DefaultHost()
}

// validHost checks a --host value: letters, digits, '.', '-' and '_'
// (no '@', which separates it in River client ids), at most 48 bytes.
func validHost(h string) error {
	if h == "" || len(h) > 48 || strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != "" {
		return grove.Userf(grove.ErrUsage, "use letters, digits, '.', '-' and '_', e.g. --host build-1", "bad host name %q", h)
	}
	return nil
}

// recordHost writes the daemon's host name into its home (hostFile).
func (a *app) recordHost() error {
	if a.host == "" {
		return nil
	}
	if err := validHost(a.host); err != nil {
		return err
	}
	p := filepath.Join(a.home, hostFile)
	if err := os.WriteFile(p+".tmp", []byte(a.host+"\n"), 0o600); err != nil {
		return fmt.Errorf("record host: %w", err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("record host: %w", err)
	}
	return nil
}

// claimHost makes this daemon the one serving its host on a shared
// PostgreSQL database (store.ClaimHost): a second daemon under the same
// host name, from another home or machine, is refused while the first
// one's heartbeat is fresh (within hostSilence, what doctor calls silent).
// A restart of the same daemon (same machine and home) is not. On SQLite
// the home's daemon lock is the whole story.
func (a *app) claimHost(ctx context.Context) error {
	if !a.st.Postgres() {
		return nil
	}
	if a.host != "" {
		if err := validHost(a.host); err != nil {
			return err
		}
	}
	return a.st.ClaimHost(ctx, instanceID(a.home), hostSilence, os.Getpid(), time.Now())
}

// instanceID names this daemon among those sharing a database: the
// machine (its /etc/machine-id, else the kernel's boot id, plus its host
// name, which tells containers of one image apart) and the home's
// absolute path. It stays the same across restarts of one daemon.
func instanceID(home string) string {
	machine := ""
	for _, p := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id"} {
		if b, err := os.ReadFile(p); err == nil {
			if machine = strings.TrimSpace(string(b)); machine != "" {
				break
			}
		}
	}
	if len(machine) > 12 {
		machine = machine[:12]
	}
	name, _ := os.Hostname()
	if abs, err := filepath.Abs(home); err == nil {
		home = abs
	}
	if real, err := filepath.EvalSymlinks(home); err == nil {
		home = real
	}
	return name + "/" + machine + ":" + home
}

// runLocalPeriodic runs the daemon's periodic jobs in this process, into
// its host's queues (PostgreSQL: see scheduler.RunLocal and jobs/host.go).
func runLocalPeriodic(ctx context.Context, client *jobs.Client, periodic []*river.PeriodicJob, log *slog.Logger) {
	err := scheduler.RunLocal(ctx, periodic, func(ctx context.Context, args river.JobArgs) error {
		_, err := client.Insert(ctx, args, nil)
		return err
	}, func(name string, err error) { log.Warn("periodic job not queued", "job", name, "err", err) })
	if err != nil {
		log.Error("no periodic maintenance on this host", "err", err)
	}
}

// onThisHost refuses what needs a task's files (run dir, worktree,
// terminal) when the task lives on another host sharing the PostgreSQL
// database: its files are on that host's disk. what names the command for
// the hint. On SQLite every task is local.
func (a *app) onThisHost(ctx context.Context, id, what string) error {
	if !a.st.Postgres() {
		return nil
	}
	t, err := a.st.Task(ctx, id)
	if err != nil {
		return err
	}
	if t.Host == "" || t.Host == a.st.Host() {
		return nil
	}
	return grove.Userf(grove.ErrBadRequest, fmt.Sprintf("run it on %s: grove %s %s", t.Host, what, id),
		"task %s lives on host %s (this is %s): its files are on that host's disk", id, t.Host, a.st.Host())
}

// openLocalTask is openTask for a command that needs the task's files
// (see onThisHost).
func (a *app) openLocalTask(ctx context.Context, arg, what string) (string, error) {
	id, err := a.openTask(ctx, arg)
	if err != nil {
		return "", err
	}
	return id, a.onThisHost(ctx, id, what)
}
