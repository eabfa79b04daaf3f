package healer

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

func TestClient(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}})
	objs := e.fill(6, 20<<10)
	e.probe()
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	ctx := context.Background()
	c := &Client{Addr: strings.TrimPrefix(srv.URL, "http://")}

	e.kill("b2")
	e.probe()
	s, err := c.Status(ctx)
	if err != nil || s.DegradedStripes != e.onBackend("b2") || len(s.Backends) != 7 {
		t.Fatalf("status %+v %v", s, err)
	}
	rep, err := c.Heal(ctx, "")
	if err != nil || rep.Remaining != 0 || rep.Repaired == 0 {
		t.Fatalf("heal %+v %v", rep, err)
	}
	if _, err := c.Heal(ctx, "obj-001"); err != nil {
		t.Fatal(err)
	}
	var de *DaemonError
	if _, err := c.Heal(ctx, "missing"); !errors.As(err, &de) || de.Status != 404 {
		t.Fatalf("heal of a missing object: %v", err)
	}
	steps := 0
	p, err := c.Scrub(ctx, false, func(ScrubProgress) { steps++ })
	if err != nil || p.Finished.IsZero() || steps == 0 || p.Done != len(e.stripes()) {
		t.Fatalf("scrub %+v %v", p, err)
	}
	if _, err := c.GC(ctx); err != nil {
		t.Fatal(err)
	}
	w, r := 5, int64(123456)
	set, err := c.SetSettings(ctx, &w, &r)
	if err != nil || set.Workers != 5 || set.RateLimit != r || e.h.limiter.Rate() != r {
		t.Fatalf("settings %+v %v", set, err)
	}
	spec := backends.Spec{Name: "n1", Kind: backends.KindLocal, Path: e.dir + "/n1", Node: "n1"}
	if err := c.AddBackend(ctx, spec, ""); err != nil || e.state("n1") != metastore.StateUp {
		t.Fatalf("add: %v", err)
	}
	if err := c.AddBackend(ctx, spec, ""); err == nil {
		t.Fatal("added a backend twice")
	}
	if err := c.Drain(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveBackend(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	e.checkObjects(objs)

	srv.Close()
	dead := &Client{Addr: c.Addr}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := dead.Status(cctx); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("closed daemon: %v", err)
	}
}
