package snapshot

import (
	"context"
	"time"

	"github.com/healstore/healstore/metastore"
)

// Schedule says when Run takes snapshots.
type Schedule struct {
	// Interval: the metastore is checked at least this often, and a
	// snapshot uploaded when it changed (default 30s). With the upload
	// time this bounds the loss window.
	Interval time.Duration
	// MaxChanges: a check runs as soon as this many commits accumulated
	// since the last one (default 1000; 0 uses the default, negative
	// disables). Needs a KV that counts its changes (etcd, CountingKV).
	MaxChanges int64
	// MaxAge: changes to Volatile values alone (backend probes) wait this
	// long before they are snapshotted (default 10m).
	MaxAge time.Duration
	// Poll is how often the change counter is read (default 1s, or a
	// quarter of Interval when that is shorter).
	Poll time.Duration
}

// Defaults of Schedule.
const (
	DefaultInterval   = 30 * time.Second
	DefaultMaxChanges = 1000
	DefaultMaxAge     = 10 * time.Minute
	defaultPoll       = time.Second
	// retryAfter spaces attempts after a failed check.
	retryAfter = 5 * time.Second
)

func (s *Schedule) fill() {
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.MaxChanges == 0 {
		s.MaxChanges = DefaultMaxChanges
	}
	if s.MaxAge <= 0 {
		s.MaxAge = DefaultMaxAge
	}
	if s.Poll <= 0 {
		s.Poll = min(defaultPoll, s.Interval/4)
	}
}

// Members lists the store's backends for a check.
type Members func(ctx context.Context) ([]Member, error)

// Run checks kv on sched and takes snapshots until ctx ends; report (if
// set) hears the outcome of every check. A failed check is retried after a
// few seconds. Run returns ctx's error.
func (s *Snapshotter) Run(ctx context.Context, kv metastore.KV, members Members, sched Schedule, o TakeOptions, report func(*Result, error)) error {
	sched.fill()
	var (
		lastCheck time.Time
		lastPos   uint64
		lastCtr   string
		failed    bool
	)
	check := func() {
		ms, err := members(ctx)
		var res *Result
		if err == nil {
			res, err = s.Take(ctx, kv, ms, TakeOptions{Settings: o.Settings, MaxAge: sched.MaxAge})
		}
		if ctx.Err() != nil {
			return
		}
		lastCheck, failed = time.Now(), err != nil
		if err == nil {
			lastPos, lastCtr = res.Position, res.Counter
		}
		if report != nil {
			report(res, err)
		}
	}
	check()
	t := time.NewTicker(sched.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		due := time.Since(lastCheck) >= sched.Interval || (failed && time.Since(lastCheck) >= retryAfter)
		if !due && sched.MaxChanges > 0 {
			if pos, ctr, ok, _ := Changes(ctx, kv); ok && ctr == lastCtr && pos >= lastPos+uint64(sched.MaxChanges) {
				due = true
			}
		}
		if due {
			check()
		}
	}
}
