package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/robfig/cron/v3"

	"github.com/grove-dev/grove"
)

// Job is one periodic job: when it runs and what it inserts.
type Job struct {
	// Name identifies the job in errors and is River's periodic job ID;
	// unique among the jobs of one client.
	Name string
	// Spec is the schedule (see Parse). "" or "off" leaves the job out.
	Spec string
	// Args builds the job's arguments at each run; its InsertOpts (queue,
	// uniqueness) apply.
	Args func() river.JobArgs
	// SkipOnStart turns off the run at daemon start (RunOnStart is the
	// default, since River does not replay missed runs).
	SkipOnStart bool
}

// Off is the spec that disables a periodic job.
const Off = "off"

// Parse parses a cron spec with cron.ParseStandard: five fields, a
// descriptor such as @hourly, or @every <duration>. An error is a
// *grove.UserError (grove.ErrUsage).
// An @every interval must be at least a second (cron would quietly round
// a smaller or negative one up to a second).
func Parse(spec string) (cron.Schedule, error) {
	const hint = `use a duration like 10m, "@every 10m", "@hourly" or five cron fields like "*/10 * * * *"`
	spec = strings.TrimSpace(spec)
	if v, ok := strings.CutPrefix(spec, "@every "); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(v)); err == nil && d < time.Second {
			return nil, grove.Userf(grove.ErrUsage, hint, "bad schedule %q: interval under a second", spec)
		}
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, grove.Userf(grove.ErrUsage, hint, "bad schedule %q: %v", spec, err)
	}
	return s, nil
}

// Every is the spec "@every d". d must be at least a second.
func Every(d time.Duration) (string, error) {
	if d < time.Second {
		return "", grove.Userf(grove.ErrUsage, "give a duration of a second or more, e.g. 10m", "bad interval %s", d)
	}
	return "@every " + d.String(), nil
}

// FlagSpec reads a schedule flag: a Go duration ("10m", turned into
// "@every 10m"), a cron spec, or "off" / "0" (disabled, returned as Off).
func FlagSpec(v string) (string, error) {
	v = strings.TrimSpace(v)
	switch v {
	case Off, "0", "":
		return Off, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return Every(d)
	}
	if _, err := Parse(v); err != nil {
		return "", err
	}
	return v, nil
}

// Jobs builds River periodic jobs from js, each with RunOnStart unless
// SkipOnStart. Jobs whose Spec is "" or Off are left out. A bad spec, a
// missing Args or a duplicate Name is an error, and nothing is returned.
func Jobs(js ...Job) ([]*river.PeriodicJob, error) {
	var out []*river.PeriodicJob
	seen := map[string]bool{}
	for _, j := range js {
		if j.Name == "" || j.Args == nil {
			return nil, errors.New("periodic job needs a name and args")
		}
		if seen[j.Name] {
			return nil, fmt.Errorf("periodic job %s defined twice", j.Name)
		}
		seen[j.Name] = true
		if j.Spec == "" || j.Spec == Off {
			continue
		}
		sched, err := Parse(j.Spec)
		if err != nil {
			return nil, fmt.Errorf("periodic job %s: %w", j.Name, err)
		}
		args := j.Args
		pj := river.NewPeriodicJob(sched, func() (river.JobArgs, *river.InsertOpts) {
			return args(), nil
		}, &river.PeriodicJobOpts{ID: j.Name, RunOnStart: !j.SkipOnStart})
		built.Store(pj, local{job: j, sched: sched})
		out = append(out, pj)
	}
	return out, nil
}

// built remembers the Job behind each PeriodicJob that Jobs returned, for
// RunLocal (River's PeriodicJob does not expose its schedule).
var built sync.Map // *river.PeriodicJob -> local

type local struct {
	job   Job
	sched cron.Schedule
}

// RunLocal runs periodic jobs built by Jobs in this process, on their
// schedules, until ctx ends: each run calls insert with the job's args
// (at once first, unless SkipOnStart). It is for daemons that share a
// PostgreSQL database, where River runs periodic jobs on its elected
// leader only, but each host must run its own maintenance. An insert's
// error goes to onErr and the schedule goes on. A job not built by Jobs
// is an error before anything runs.
func RunLocal(ctx context.Context, pjs []*river.PeriodicJob, insert func(context.Context, river.JobArgs) error, onErr func(name string, err error)) error {
	var ls []local
	for _, pj := range pjs {
		v, ok := built.Load(pj)
		if !ok {
			return errors.New("periodic job not built by scheduler.Jobs")
		}
		ls = append(ls, v.(local))
	}
	next := make([]time.Time, len(ls))
	now := time.Now()
	for i, l := range ls {
		next[i] = l.sched.Next(now)
		if !l.job.SkipOnStart {
			next[i] = now
		}
	}
	for len(ls) > 0 {
		first := 0
		for i := range next {
			if next[i].Before(next[first]) {
				first = i
			}
		}
		t := time.NewTimer(time.Until(next[first]))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		l := ls[first]
		if err := insert(ctx, l.job.Args()); err != nil && ctx.Err() == nil {
			onErr(l.job.Name, err)
		}
		next[first] = l.sched.Next(time.Now())
	}
	<-ctx.Done()
	return nil
}
