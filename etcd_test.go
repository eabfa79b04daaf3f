package healstore

import (
	"context"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/healer/snapshot"
	"github.com/healstore/healstore/metastore/metastoretest"
)

func etcdFixture(t *testing.T) *recoverFixture {
	t.Helper()
	eps := metastoretest.EtcdEndpoints(t)
	f := newRecoverFixture(t)
	f.cfg.Metastore = MetastoreConfig{Kind: "etcd", Endpoints: eps, Prefix: metastoretest.EtcdPrefix(t, eps, "hs-test")}
	return f
}

func TestEtcdSnapshotLossWindowAndRecover(t *testing.T) {
	ctx := context.Background()
	f := etcdFixture(t)
	s := f.open(t)
	defer s.Close()
	rnd := recRand(t)
	objs := recPutRandom(t, s, rnd, "etcd", 8)
	sn, err := s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := sn.Take(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if info.Consistency != snapshot.PointInTime {
		t.Fatalf("etcd snapshot consistency %q, want %q", info.Consistency, snapshot.PointInTime)
	}
	lw, err := s.LossWindow(ctx)
	if err != nil || lw.Changes != 0 || lw.Snapshot == nil || lw.Snapshot.ID != info.ID {
		t.Fatalf("loss window right after a snapshot: %+v, %v", lw, err)
	}
	recPutRandom(t, s, rnd, "later", 2)
	lw, err = s.LossWindow(ctx)
	if err != nil || lw.Changes < 2 {
		t.Fatalf("loss window after two puts: %+v, %v", lw, err)
	}
	t.Logf("two puts are %d etcd revisions", lw.Changes)
	s.Close()

	// An etcd store recovers into an embedded (pebble) one.
	rep, err := Recover(ctx, RecoverOptions{KeyFile: f.keyFile, Backends: f.specs[1:2], Dir: filepath.Join(t.TempDir(), "r")})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Snapshot.ID != info.ID || rep.Objects != len(objs) {
		t.Fatalf("recovered snapshot %s with %d objects", rep.Snapshot.ID, rep.Objects)
	}
	r := openConfigFile(t, rep.ConfigPath)
	recReadBack(t, r, objs)
}

func TestEtcdLeaderHandover(t *testing.T) {
	f := etcdFixture(t)
	s1, s2 := f.open(t), f.open(t)
	defer s1.Close()
	defer s2.Close()
	type run struct {
		cancel  context.CancelFunc
		elected chan string
		done    chan error
		active  chan bool // fn running
	}
	start := func(s *Store, id string) *run {
		ctx, cancel := context.WithCancel(context.Background())
		r := &run{cancel: cancel, elected: make(chan string, 4), done: make(chan error, 1), active: make(chan bool, 4)}
		go func() {
			r.done <- s.RunAsLeader(ctx, func(ctx context.Context) error {
				r.active <- true
				<-ctx.Done()
				r.active <- false
				return nil
			}, LeaderOptions{TTL: 2 * time.Second, Identity: id, OnElected: func(id string) { r.elected <- id }})
		}()
		return r
	}
	r1 := start(s1, "one")
	var first, second *run
	select {
	case <-r1.elected:
		first = r1
	case <-time.After(15 * time.Second):
		t.Fatal("no leader elected")
	}
	r2 := start(s2, "two")
	second = r2
	if id, err := s2.Leader(context.Background()); err != nil || id != "one" {
		t.Fatalf("Leader() = %q, %v; want one", id, err)
	}
	select {
	case <-r2.elected:
		t.Fatal("two leaders at once")
	case <-time.After(time.Second):
	}
	// The leader steps down (its process stops): the other takes over at
	// once, without waiting for the lease to expire.
	first.cancel()
	if err := <-first.done; err != nil {
		t.Fatalf("leader's RunAsLeader: %v", err)
	}
	select {
	case <-second.elected:
	case <-time.After(10 * time.Second):
		t.Fatal("the second process was not elected after the first stepped down")
	}
	if id, _ := s1.Leader(context.Background()); id != "two" {
		t.Fatalf("Leader() = %q after handover, want two", id)
	}
	second.cancel()
	if err := <-second.done; err != nil {
		t.Fatal(err)
	}
}

// A one-off maintenance command holds the leadership for its work: it is
// refused while a daemon leads, and a daemon waits while it holds it.
func TestEtcdHoldLeadership(t *testing.T) {
	f := etcdFixture(t)
	s1, s2 := f.open(t), f.open(t)
	defer s1.Close()
	defer s2.Close()
	daemon := func(id string) (elected chan struct{}, stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		elected, done := make(chan struct{}, 1), make(chan error, 1)
		go func() {
			done <- s1.RunAsLeader(ctx, func(ctx context.Context) error { <-ctx.Done(); return nil },
				LeaderOptions{TTL: 2 * time.Second, Identity: id, OnElected: func(string) { elected <- struct{}{} }})
		}()
		return elected, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("RunAsLeader %s: %v", id, err)
			}
		}
	}
	elected, stop := daemon("daemon-one")
	select {
	case <-elected:
	case <-time.After(15 * time.Second):
		t.Fatal("no leader elected")
	}
	ctx := context.Background()
	_, _, err := s2.HoldLeadership(ctx, time.Second)
	var nl *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nl) || nl.Leader != "daemon-one" {
		t.Fatalf("HoldLeadership while a daemon leads: %v; want a NotLeaderError naming daemon-one", err)
	}
	stop()

	lctx, release, err := s2.HoldLeadership(ctx, 10*time.Second)
	if err != nil {
		t.Fatalf("HoldLeadership with no leader: %v", err)
	}
	if id, err := s1.Leader(ctx); err != nil || id != processIdentity() {
		t.Fatalf("Leader() = %q, %v while held; want %q", id, err, processIdentity())
	}
	elected, stop = daemon("daemon-two")
	defer stop()
	select {
	case <-elected:
		t.Fatal("a daemon was elected while a command held the leadership")
	case <-time.After(1500 * time.Millisecond):
	}
	if lctx.Err() != nil {
		t.Fatalf("the held context ended while the leadership is held: %v", context.Cause(lctx))
	}
	release()
	if lctx.Err() == nil {
		t.Fatal("the held context did not end at release")
	}
	select {
	case <-elected:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon was not elected after the command released the leadership")
	}
}

// On a shared metastore a daemon that does not lead refuses maintenance
// through its API (its healer is idle; the work would run beside the
// leader's) and still serves status; the leader's daemon takes it.
func TestEtcdDaemonMaintenanceOnlyOnLeader(t *testing.T) {
	f := etcdFixture(t)
	s1, s2 := f.open(t), f.open(t)
	defer s1.Close()
	defer s2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := func(s *Store) (string, chan error) {
		ready, done := make(chan string, 1), make(chan error, 1)
		go func() {
			done <- s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { ready <- a }})
		}()
		select {
		case a := <-ready:
			return a, done
		case err := <-done:
			t.Fatalf("daemon: %v", err)
		case <-time.After(15 * time.Second):
			t.Fatal("daemon not serving")
		}
		return "", nil
	}
	addr1, done1 := serve(s1)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if id, _ := s1.Leader(ctx); id != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader elected")
		}
		time.Sleep(50 * time.Millisecond)
	}
	addr2, done2 := serve(s2)
	call := func(addr, method, path, reqBody string) (int, string) {
		req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(reqBody))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(healer.ClientHeader, "1")
		// The two daemons share one dir, and so one token.
		token, err := DaemonToken(s1.cfg)
		if err != nil || token == "" {
			t.Fatalf("daemon token %q: %v", token, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	post := func(addr string) (int, string) { return call(addr, http.MethodPost, "/v1/gc", "") }
	if code, body := post(addr2); code != http.StatusServiceUnavailable || !strings.Contains(body, ErrNotLeader.Error()) {
		t.Fatalf("gc through the daemon that does not lead: %d %s; want 503 saying another process leads", code, body)
	}
	// A probe records backend states and queues stripes; settings tune
	// a healer that does not run.
	for _, r := range [][3]string{{http.MethodPost, "/v1/probe", ""}, {http.MethodPut, "/v1/settings", `{"workers":3}`}} {
		if code, body := call(addr2, r[0], r[1], r[2]); code != http.StatusServiceUnavailable || !strings.Contains(body, ErrNotLeader.Error()) {
			t.Fatalf("%s %s through the daemon that does not lead: %d %s; want 503 saying another process leads", r[0], r[1], code, body)
		}
	}
	if code, body := call(addr1, http.MethodPut, "/v1/settings", `{"workers":3}`); code != http.StatusOK || !strings.Contains(body, `"workers":3`) {
		t.Fatalf("settings through the leader's daemon: %d %s", code, body)
	}
	if resp, err := http.Get("http://" + addr2 + "/status"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status from the daemon that does not lead: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, body := post(addr1); code != http.StatusOK {
		t.Fatalf("gc through the leader's daemon: %d %s", code, body)
	}
	cancel()
	for _, d := range []chan error{done1, done2} {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
}

// recRand returns a seeded generator and logs its seed.
func recRand(t *testing.T) *mrand.Rand {
	seed := mrand.Uint64()
	t.Logf("seed %d", seed)
	return mrand.New(mrand.NewPCG(seed, 11))
}
