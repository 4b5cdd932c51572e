package scheduler

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

func TestParseAndNext(t *testing.T) {
	is := is.New(t)
	base := time.Date(2025, 3, 4, 10, 7, 30, 0, time.UTC)
	for spec, want := range map[string]time.Time{
		"@every 10m":   base.Add(10 * time.Minute),
		"*/10 * * * *": time.Date(2025, 3, 4, 10, 10, 0, 0, time.UTC),
		"@hourly":      time.Date(2025, 3, 4, 11, 0, 0, 0, time.UTC),
		"0 3 * * *":    time.Date(2025, 3, 5, 3, 0, 0, 0, time.UTC),
	} {
		s, err := Parse(spec)
		is.NoErr(err)
		is.Equal(s.Next(base), want) // a cron.Schedule is a river.PeriodicSchedule
		var _ river.PeriodicSchedule = s
	}
	for _, bad := range []string{"every 10m", "* * *", "@every -1m", "61 * * * *", ""} {
		_, err := Parse(bad)
		is.True(errors.Is(err, grove.ErrUsage))
		is.True(grove.HintOf(err) != "")
	}
}

func TestEveryAndFlagSpec(t *testing.T) {
	is := is.New(t)
	s, err := Every(10 * time.Minute)
	is.NoErr(err)
	is.Equal(s, "@every 10m0s")
	_, err = Every(0)
	is.True(errors.Is(err, grove.ErrUsage))

	for in, want := range map[string]string{
		"10m":          "@every 10m0s",
		"1h30m":        "@every 1h30m0s",
		"@every 5m":    "@every 5m",
		"*/10 * * * *": "*/10 * * * *",
		"off":          Off,
		"0":            Off,
	} {
		got, err := FlagSpec(in)
		is.NoErr(err)
		is.Equal(got, want)
	}
	_, err = FlagSpec("-5m")
	is.True(errors.Is(err, grove.ErrUsage))
	_, err = FlagSpec("sometimes")
	is.True(errors.Is(err, grove.ErrUsage))
}

type pingArgs struct{ N int }

func (pingArgs) Kind() string { return "scheduler_test_ping" }

func TestJobsValidates(t *testing.T) {
	is := is.New(t)
	args := func() river.JobArgs { return pingArgs{} }
	jobs, err := Jobs(Job{Name: "a", Spec: "@every 1m", Args: args}, Job{Name: "b", Spec: Off, Args: args},
		Job{Name: "c", Spec: "", Args: args})
	is.NoErr(err)
	is.Equal(len(jobs), 1) // off and empty are left out
	_, err = Jobs(Job{Name: "a", Spec: "@every 1m", Args: args}, Job{Name: "a", Spec: "@every 2m", Args: args})
	is.True(err != nil) // duplicate
	_, err = Jobs(Job{Name: "a", Spec: "@every 1m"})
	is.True(err != nil) // no args
	_, err = Jobs(Job{Name: "a", Spec: "nope", Args: args})
	is.True(errors.Is(err, grove.ErrUsage))
}

type pingWorker struct {
	river.WorkerDefaults[pingArgs]
	ran chan int
}

func (w *pingWorker) Work(_ context.Context, job *river.Job[pingArgs]) error {
	w.ran <- job.Args.N
	return nil
}

// A daemon runs each periodic job once at start (River does not replay
// missed runs), long before its hourly schedule.
func TestRunOnStart(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "home"), store.Options{})
	is.NoErr(err)
	defer st.Close()

	periodic, err := Jobs(Job{Name: "ping", Spec: "@hourly", Args: func() river.JobArgs { return pingArgs{N: 7} }})
	is.NoErr(err)
	w := &pingWorker{ran: make(chan int, 4)}
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	client, err := river.NewClient(riversqlite.New(st.DB()), &river.Config{
		ID:                "scheduler-test",
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 1}},
		Workers:           workers,
		PeriodicJobs:      periodic,
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	is.NoErr(err)
	is.NoErr(client.Start(ctx))
	defer func() {
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		is.NoErr(client.Stop(stopCtx))
	}()
	select {
	case n := <-w.ran:
		is.Equal(n, 7)
	case <-time.After(30 * time.Second):
		t.Fatal("periodic job did not run on start")
	}
}

// RunLocal runs jobs built by Jobs in this process: a RunOnStart job at
// once and then on its schedule, a SkipOnStart one only on its schedule;
// a job from elsewhere is refused.
func TestRunLocal(t *testing.T) {
	pjs, err := Jobs(
		Job{Name: "now", Spec: "@every 1s", Args: func() river.JobArgs { return pingArgs{} }},
		Job{Name: "later", Spec: "@every 1h", Args: func() river.JobArgs { return pingArgs{} }, SkipOnStart: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := make(chan struct{}, 10)
	done := make(chan error, 1)
	go func() {
		done <- RunLocal(ctx, pjs, func(context.Context, river.JobArgs) error { runs <- struct{}{}; return nil },
			func(name string, err error) { t.Errorf("%s: %v", name, err) })
	}()
	for i := range 2 { // at start, then a second later
		select {
		case <-runs:
		case <-time.After(30 * time.Second):
			t.Fatalf("run %d never came", i+1)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The hourly SkipOnStart job alone does not run at start.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	ran := false
	if err := RunLocal(ctx2, pjs[1:], func(context.Context, river.JobArgs) error { ran = true; return nil }, nil); err != nil || ran {
		t.Errorf("SkipOnStart job: err %v, ran %v", err, ran)
	}
	other := river.NewPeriodicJob(river.PeriodicInterval(time.Hour), func() (river.JobArgs, *river.InsertOpts) { return pingArgs{}, nil }, nil)
	if err := RunLocal(context.Background(), []*river.PeriodicJob{other}, nil, nil); err == nil {
		t.Error("a periodic job not built by Jobs was accepted")
	}
}
