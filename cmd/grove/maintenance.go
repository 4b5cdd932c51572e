package main

import (
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
}

func (m *maintenance) flags(c *cobra.Command) {
	c.Flags().StringVar(&m.reapEvery, "reap-every", "10m",
		`how often the reaper runs: a duration, a cron spec ("*/10 * * * *", "@hourly") or "off"`)
	c.Flags().DurationVar(&m.reapGrace, "reap-grace", jobs.DefaultReapGrace,
		"leave a worktree whose task is finished alone this long before the reaper considers it")
}

// periodic turns the flags into River periodic jobs (each also runs once
// when the daemon starts: River does not replay runs missed while it was
// down). A bad flag is a usage error.
func (m maintenance) periodic() ([]*river.PeriodicJob, error) {
	if m.reapGrace < 0 {
		return nil, grove.Userf(grove.ErrUsage, "give a duration like 1h, or 0 for no grace", "negative --reap-grace %s", m.reapGrace)
	}
	every, err := scheduler.FlagSpec(m.reapEvery)
	if err != nil {
		return nil, err
	}
	return scheduler.Jobs(
		scheduler.Job{Name: "reap", Spec: every, Args: func() river.JobArgs { return jobs.ReapArgs{} }},
		// Sessions: idle-TTL eviction and the live-session cap, every minute.
		scheduler.Job{Name: "evict_idle", Spec: "@every 1m", Args: func() river.JobArgs { return jobs.EvictIdleArgs{} }},
		scheduler.Job{Name: "lru_cap", Spec: "@every 1m", Args: func() river.JobArgs { return jobs.LRUCapArgs{} }},
		// The warm pool follows tips moved outside grove (a user's commit).
		scheduler.Job{Name: "pool_fill", Spec: "@every 30s", Args: func() river.JobArgs { return jobs.PoolFillArgs{} }},
	)
}
