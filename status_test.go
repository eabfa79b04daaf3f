package healstore

import (
	"context"
	"testing"
	"time"
)

// StatusFrom answers from the daemon when one runs (it holds the store's
// metadata lock) and from the store itself otherwise, with the same figures.
func TestStatusFrom(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	hs.put("a", make([]byte, 100<<10))
	ctx := context.Background()
	direct, err := hs.s.HealStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if direct.Stripes != 4 || direct.DegradedStripes != 0 || len(direct.Backends) != 6 {
		t.Fatalf("direct status %+v", direct)
	}
	hs.s.Close()

	// No daemon: StatusFrom opens the store.
	hs.cfg.Healer.MetricsAddr = "127.0.0.1:1" // nothing listens there
	st, fromDaemon, err := StatusFrom(ctx, hs.cfg)
	if err != nil || fromDaemon || st.Stripes != direct.Stripes {
		t.Fatalf("status without daemon: %+v %v %v", st, fromDaemon, err)
	}

	// With a daemon running on the store, StatusFrom asks it.
	hs.open()
	dctx, cancel := context.WithCancel(ctx)
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- hs.s.RunDaemon(dctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { addrc <- a }})
	}()
	hs.cfg.Healer.MetricsAddr = <-addrc
	st, fromDaemon, err = StatusFrom(ctx, hs.cfg)
	if err != nil || !fromDaemon || st.Stripes != direct.Stripes || st.StoreID != direct.StoreID {
		t.Fatalf("status through the daemon: %+v %v %v", st, fromDaemon, err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop")
	}
}
