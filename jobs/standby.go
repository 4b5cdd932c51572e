package jobs

import (
	"context"
	"sync"
	"time"

	"github.com/grove-dev/grove/jobs/supervise"
)

// MaxStandbys caps the supervisors kept started ahead (grove serve
// --standbys, --warm).
const MaxStandbys = 4

// standbys are supervisors started ahead (supervise.StartStandby), kept by
// the daemon (grove serve --standbys, at least --warm): a run handed to one
// starts its agent without first starting a Go binary of ~30 MB (~22 ms
// idle, ~75 ms on a saturated 2-core box, between the "started" event and
// the agent's first instruction). A run with none ready starts its own
// supervisor.
type standbys struct {
	mu     sync.Mutex
	ready  []*supervise.Standby
	closed bool
	taken  chan struct{} // buffered(1): the keeper refills
}

// KeepStandbys keeps n supervisors started ahead until ctx ends, then
// sends them away (a standby also leaves when this process dies: it reads
// end-of-file). n is capped at 4; n <= 0 keeps none.
func (d *Deps) KeepStandbys(ctx context.Context, n int) {
	n = min(n, MaxStandbys)
	if n <= 0 {
		return
	}
	s := &standbys{taken: make(chan struct{}, 1)}
	d.mu.Lock()
	d.standby = s
	d.mu.Unlock()
	defer s.close()
	for {
		if err := s.fill(d.Exe, n); err != nil {
			d.Logger.Warn("standby supervisor not started; runs start their own", "err", err)
			select { // try again later, not in a loop
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.taken:
		}
		// Not at once: the run that took one is starting its agent, and
		// a Go binary's start beside it (~20 ms of CPU) would slow that.
		select {
		case <-ctx.Done():
			return
		case <-time.After(refillDelay):
		}
	}
}

// refillDelay is how long after a standby is taken its replacement starts.
const refillDelay = 250 * time.Millisecond

// fill starts standbys until n are ready (the dead ones dropped).
func (s *standbys) fill(exe string, n int) error {
	for {
		s.mu.Lock()
		live := s.ready[:0]
		for _, sb := range s.ready {
			if sb.Alive() {
				live = append(live, sb)
			} else {
				sb.Close()
			}
		}
		s.ready = live
		full := s.closed || len(s.ready) >= n
		s.mu.Unlock()
		if full {
			return nil
		}
		sb, err := supervise.StartStandby(exe)
		if err != nil {
			return err
		}
		s.mu.Lock()
		if s.closed {
			sb.Close()
		} else {
			s.ready = append(s.ready, sb)
		}
		s.mu.Unlock()
	}
}

// take returns a live standby, or nil (none ready, or s is nil: the daemon
// keeps none), and has the keeper start another.
func (s *standbys) take() *supervise.Standby {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.closed && len(s.ready) > 0 {
		sb := s.ready[len(s.ready)-1]
		s.ready = s.ready[:len(s.ready)-1]
		select {
		case s.taken <- struct{}{}:
		default:
		}
		if sb.Alive() {
			return sb
		}
		sb.Close()
	}
	return nil
}

// close sends every ready standby away; take returns nil from now on.
func (s *standbys) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, sb := range s.ready {
		sb.Close()
	}
	s.ready = nil
}

// startSupervisor starts the supervisor of the run in dir: a standby's, if
// one is ready, else a new one (supervise.Start). Either way the run's
// lock is taken before the supervisor runs it.
func (d *Deps) startSupervisor(dir string, spec supervise.Spec) (supervise.Started, error) {
	d.mu.Lock()
	s := d.standby
	d.mu.Unlock()
	if sb := s.take(); sb != nil {
		started, err := sb.Run(dir, spec)
		if err == nil {
			return started, nil
		}
		d.Logger.Warn("standby supervisor not used; starting one", "dir", dir, "err", err)
	}
	return supervise.Start(d.Exe, dir, spec)
}
