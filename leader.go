package healstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/healstore/healstore/healer/snapshot"
	etcdkv "github.com/healstore/healstore/metastore/etcd"
)

// DefaultLeaderTTL is the lease of the elected process: when it dies,
// another takes over at most this long after its last keep-alive.
const DefaultLeaderTTL = 10 * time.Second

// leaderElection is the etcd key prefix (under the store's prefix, outside
// the metastore's data keys) of the election of the process that runs the
// healer and the snapshotter.
const leaderElection = "election/maintenance"

// LeaderOptions adjust RunAsLeader.
type LeaderOptions struct {
	// TTL of the leader's lease (default DefaultLeaderTTL, at least 2s;
	// etcd rounds it to whole seconds).
	TTL time.Duration
	// Identity names this process in the election (default
	// host/pid).
	Identity string
	// OnElected and OnLost, if set, hear the transitions (for logs and
	// tests); OnLost gets why leadership ended.
	OnElected func(identity string)
	OnLost    func(err error)
}

// ErrLeadershipLost is the cause of the context a leader's fn runs under
// when its lease ended (etcd unreachable longer than the TTL).
var ErrLeadershipLost = errors.New("leadership lost (lease expired)")

// RunAsLeader runs fn while this process holds the store's maintenance
// leadership, so that among the processes sharing one etcd metastore one
// runs the healer and the snapshotter at a time. It campaigns, runs fn
// with a context that ends when leadership is lost (its lease could not be
// kept alive), and campaigns again after a loss. When the leader's process
// dies, its lease expires within TTL and a waiting process is elected;
// the repair queue lives in the metastore, so the new leader resumes it.
//
// With the embedded pebble metastore (one process per store) this
// process is always the leader and fn runs at once.
//
// RunAsLeader returns nil when ctx ends, or fn's error when fn fails while
// still leader (fn must return when its context ends).
func (s *Store) RunAsLeader(ctx context.Context, fn func(ctx context.Context) error, opts ...LeaderOptions) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	var o LeaderOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Identity == "" {
		o.Identity = processIdentity()
	}
	e, ok := snapshot.Unwrap(s.meta.KV()).(*etcdkv.KV)
	if !ok {
		if o.OnElected != nil {
			o.OnElected(o.Identity)
		}
		err := fn(ctx)
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ttl := o.TTL
	if ttl <= 0 {
		ttl = DefaultLeaderTTL
	}
	secs := max(int(math.Ceil(ttl.Seconds())), 2)
	for {
		if err := s.checkOpen(); err != nil {
			return err
		}
		err := s.leadOnce(ctx, e, secs, o, fn)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, ErrLeadershipLost) && !errors.Is(err, errCampaign) {
			return err
		}
		if o.OnLost != nil && errors.Is(err, ErrLeadershipLost) {
			o.OnLost(err)
		}
		s.log.Warn("maintenance leadership: campaigning again", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// errCampaign marks a failure to join the election that is worth
// retrying (etcd unreachable for a moment).
var errCampaign = errors.New("leader election")

// leadOnce campaigns once and, when elected, runs fn until it returns or
// the lease is lost.
func (s *Store) leadOnce(ctx context.Context, e *etcdkv.KV, ttlSecs int, o LeaderOptions, fn func(context.Context) error) error {
	lctx, release, err := s.elect(ctx, e, ttlSecs, o.Identity, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.log.Info("elected maintenance leader", "identity", o.Identity)
	if o.OnElected != nil {
		o.OnElected(o.Identity)
	}
	ferr := fn(lctx)
	lost := errors.Is(context.Cause(lctx), ErrLeadershipLost)
	release()
	switch {
	case ctx.Err() != nil:
		return nil
	case lost:
		return ErrLeadershipLost
	}
	return ferr
}

// errNotElected: another process held the leadership for as long as a
// campaign would wait.
var errNotElected = errors.New("not elected in time")

// elect campaigns for the maintenance leadership with a lease of ttlSecs,
// waiting at most wait for it (then errNotElected; 0: as long as ctx
// lasts). Elected, it returns a context that ends when the lease is lost (cause
// ErrLeadershipLost) or release is called; release hands the leadership
// over at once (unless it was lost) and ends the lease. Failures to reach
// etcd are errCampaign.
func (s *Store) elect(ctx context.Context, e *etcdkv.KV, ttlSecs int, identity string, wait time.Duration) (context.Context, func(), error) {
	sess, err := concurrency.NewSession(e.Client(), concurrency.WithTTL(ttlSecs), concurrency.WithContext(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: session: %v", errCampaign, err)
	}
	el := concurrency.NewElection(sess, e.Prefix()+leaderElection)
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		cctx, cancel = context.WithTimeout(ctx, wait)
	}
	err = el.Campaign(cctx, identity)
	timedOut := cctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err != nil {
		// Closing the session revokes its lease, which removes this
		// process's entry from the election if the campaign left one.
		sess.Close()
		switch {
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case timedOut:
			return nil, nil, errNotElected
		}
		return nil, nil, fmt.Errorf("%w: campaign: %v", errCampaign, err)
	}
	lctx, lcancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-sess.Done():
			lcancel(ErrLeadershipLost)
		case <-lctx.Done():
		}
	}()
	var once sync.Once
	release := func() {
		once.Do(func() {
			lost := errors.Is(context.Cause(lctx), ErrLeadershipLost)
			lcancel(nil)
			if !lost {
				// Hand over at once rather than after the TTL.
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				el.Resign(rctx)
				rcancel()
			}
			sess.Close()
		})
	}
	return lctx, release, nil
}

// Leader returns the identity of the process that holds the maintenance
// leadership ("" when none does). With pebble it is this process.
func (s *Store) Leader(ctx context.Context) (string, error) {
	if err := s.checkOpen(); err != nil {
		return "", err
	}
	e, ok := snapshot.Unwrap(s.meta.KV()).(*etcdkv.KV)
	if !ok {
		return processIdentity(), nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The leader is the oldest key of the election prefix (what
	// concurrency.Election.Leader reads, without a session of our own).
	resp, err := e.Client().Get(cctx, e.Prefix()+leaderElection+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// processIdentity names this process: host/pid.
func processIdentity() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// ErrNotLeader matches the error of HoldLeadership when another process
// leads the store's maintenance (errors.Is); the error is a
// *NotLeaderError naming it.
var ErrNotLeader = errors.New("another process leads this store's maintenance")

// NotLeaderError says which process holds the maintenance leadership.
type NotLeaderError struct {
	Leader string // its identity (host/pid), "" if it left meanwhile
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return ErrNotLeader.Error()
	}
	return fmt.Sprintf("%v (%s)", ErrNotLeader, e.Leader)
}

func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// HoldLeadership makes this process the store's maintenance leader for a
// one-off piece of maintenance (a repair, a scrub, a drain run by hand),
// so that it never runs beside the healer of a daemon sharing the etcd
// metastore: two healers at once could, for one, delete as garbage a shard
// the other has just rebuilt in the same place. It waits at most wait to
// be elected; when another process holds the leadership all that time, it
// returns a *NotLeaderError naming it. Once elected it returns a context
// that ends when the leadership is lost (the lease could not be kept
// alive) or release is called; release hands the leadership over at once.
//
// With the embedded pebble metastore (one process per store) it returns
// ctx and a release that does nothing.
func (s *Store) HoldLeadership(ctx context.Context, wait time.Duration) (context.Context, func(), error) {
	if err := s.checkOpen(); err != nil {
		return nil, nil, err
	}
	e, ok := snapshot.Unwrap(s.meta.KV()).(*etcdkv.KV)
	if !ok {
		return ctx, func() {}, nil
	}
	secs := max(int(math.Ceil(DefaultLeaderTTL.Seconds())), 2)
	lctx, release, err := s.elect(ctx, e, secs, processIdentity(), wait)
	if errors.Is(err, errNotElected) {
		leader, _ := s.Leader(ctx)
		return nil, nil, &NotLeaderError{Leader: leader}
	}
	if err != nil {
		return nil, nil, err
	}
	return lctx, release, nil
}
