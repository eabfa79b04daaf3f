package healstore

import (
	"context"
	"errors"

	"github.com/healstore/healstore/healer"
)

// HealStatus reports the store's health as the healer sees it, without
// running any loop: backends with their recorded states, stripes by
// margin, the repair queue. `healstore status` uses it when no daemon runs.
func (s *Store) HealStatus(ctx context.Context) (*healer.Status, error) {
	h, err := s.newHealer(ctx, HealerOptions{}, false)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.Status(ctx)
}

// DaemonStatus asks a running daemon at addr for its status; it returns
// an error matching healer.ErrNoDaemon when none answers there.
func DaemonStatus(ctx context.Context, addr string) (*healer.Status, error) {
	c := &healer.Client{Addr: addr}
	return c.Status(ctx)
}

// StatusFrom reports the store's health from the daemon at the config's
// healer.metrics_addr when one of this store runs (it holds the store),
// else by opening the store here. fromDaemon says which.
func StatusFrom(ctx context.Context, cfg *Config) (st *healer.Status, fromDaemon bool, err error) {
	addr := cfg.Healer.MetricsAddr
	if addr == "" {
		addr = DefaultMetricsAddr
	}
	st, err = DaemonStatus(ctx, addr)
	if err == nil {
		// Stores made by init share the default address: the daemon
		// there may be another store's, whose status is not this one's.
		err = CheckDaemonStore(ctx, addr, cfg)
		if err == nil {
			return st, true, nil
		}
	}
	if !errors.Is(err, healer.ErrNoDaemon) && !errors.Is(err, ErrOtherStore) {
		return nil, false, err
	}
	s, err := Open(ctx, cfg)
	if err != nil {
		return nil, false, err
	}
	defer s.Close()
	st, err = s.HealStatus(ctx)
	return st, false, err
}
