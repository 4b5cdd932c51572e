package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/scheduler"
)

// maintenance is the daemon's periodic work, from `grove serve` flags.
type maintenance struct {
	reapEvery string        // a duration or a cron spec; "off" disables
	reapGrace time.Duration // how long an ownerless worktree is left alone
	keepRefs  string        // refs/grove/tasks/* retention: "30d", a duration, or 0 (forever)

	backup backupSchedule // --backup-every, --backup-to (backup.go)
}

func (m *maintenance) flags(c *cobra.Command) {
	c.Flags().StringVar(&m.reapEvery, "reap-every", "10m",
		`how often the reaper runs: a duration, a cron spec ("*/10 * * * *", "@hourly") or "off"`)
	c.Flags().DurationVar(&m.reapGrace, "reap-grace", jobs.DefaultReapGrace,
		"leave a worktree whose task is finished alone this long before the reaper considers it")
	c.Flags().StringVar(&m.keepRefs, "keep-refs", "30d",
		"keep a finished task's refs/grove/tasks/ID (its change) this long after it ended, then the reaper removes it: days (30d) or a duration (0: forever)")
	m.backup.flags(c)
}

// keepRefsDuration parses --keep-refs: a number of days ("30d") or a Go
// duration ("720h"); 0 keeps refs forever.
func (m maintenance) keepRefsDuration() (time.Duration, error) {
	bad := func() error {
		return grove.Userf(grove.ErrUsage, "give days like 30d, a duration like 720h, or 0 to keep them forever", "bad --keep-refs %q", m.keepRefs)
	}
	s := strings.TrimSpace(m.keepRefs)
	if s == "0" || s == "" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, bad()
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, bad()
	}
	return d, nil
}

// periodic turns the flags into River periodic jobs (each also runs once
// when the daemon starts: River does not replay runs missed while it was
// down). A bad flag is a usage error.
func (m maintenance) periodic() ([]*river.PeriodicJob, error) {
	if m.reapGrace < 0 {
		return nil, grove.Userf(grove.ErrUsage, "give a duration like 1h, or 0 for no grace", "negative --reap-grace %s", m.reapGrace)
	}
	if _, err := m.keepRefsDuration(); err != nil {
		return nil, err
	}
	every, err := scheduler.FlagSpec(m.reapEvery)
	if err != nil {
		return nil, err
	}
	backup, err := m.backup.job()
	if err != nil {
		return nil, err
	}
	return scheduler.Jobs(backup,
		scheduler.Job{Name: "reap", Spec: every, Args: func() river.JobArgs { return jobs.ReapArgs{} }},
		// Sessions: idle-TTL eviction and the live-session cap, every minute.
		scheduler.Job{Name: "evict_idle", Spec: "@every 1m", Args: func() river.JobArgs { return jobs.EvictIdleArgs{} }},
		scheduler.Job{Name: "lru_cap", Spec: "@every 1m", Args: func() river.JobArgs { return jobs.LRUCapArgs{} }},
		// The warm pool follows tips moved outside grove (a user's commit).
		scheduler.Job{Name: "pool_fill", Spec: "@every 30s", Args: func() river.JobArgs { return jobs.PoolFillArgs{} }},
	)
}
