package healstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
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

// daemonAnswerWait is how long StatusFrom waits for the daemon at
// healer.metrics_addr to say which store it serves, its first contact
// with the daemon; the status that follows (a census of every stripe) has
// no bound.
var daemonAnswerWait = 3 * time.Second

// StatusFrom reports the store's health from the daemon at the config's
// healer.metrics_addr when one of this store runs (it holds the store),
// else by opening the store here. fromDaemon says which. Something at the
// address that accepts connections and does not answer within a few
// seconds (a hung or stopped daemon) is not waited for: the store is
// opened here, and if another process holds it the error says that the
// daemon does not answer.
func StatusFrom(ctx context.Context, cfg *Config) (st *healer.Status, fromDaemon bool, err error) {
	addr := cfg.Healer.MetricsAddr
	if addr == "" {
		addr = DefaultMetricsAddr
	}
	// Which store it serves first, a quick question: stores made by init
	// share the default address, so the daemon there may be another
	// store's, whose status is not this one's.
	_, silent, err := DaemonServes(ctx, addr, cfg, daemonAnswerWait)
	if err == nil {
		st, err = DaemonStatus(ctx, addr)
		if err == nil {
			return st, true, nil
		}
	}
	if !silent && !errors.Is(err, healer.ErrNoDaemon) && !errors.Is(err, ErrOtherStore) {
		return nil, false, err
	}
	s, oerr := Open(ctx, cfg)
	if silent && errors.Is(oerr, metastore.ErrLocked) {
		return nil, false, fmt.Errorf("%w; the daemon at %s (healer.metrics_addr) does not answer within %s: it may be stuck (check it, then stop or restart it)",
			oerr, addr, daemonAnswerWait)
	}
	if oerr != nil {
		return nil, false, oerr
	}
	defer s.Close()
	st, err = s.HealStatus(ctx)
	return st, false, err
}
