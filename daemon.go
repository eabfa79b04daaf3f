package healstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/healer/snapshot"
	etcdkv "github.com/healstore/healstore/metastore/etcd"
)

// DaemonOptions configure RunDaemon.
type DaemonOptions struct {
	// Addr is where metrics, the JSON status and the healer's API are
	// served. Default: the config's healer.metrics_addr (127.0.0.1:9310).
	Addr string
	// Healer adjusts the healer the daemon runs.
	Healer HealerOptions
	// Ready, if set, is called with the bound address once the daemon
	// serves (useful with port 0).
	Ready func(addr string)
}

// shutdownGrace bounds how long in-flight HTTP requests may take to answer
// at shutdown, once their contexts have ended.
const shutdownGrace = 10 * time.Second

// errDaemonStopping is why the requests in flight when the daemon stops
// end: a heal or scrub asked through the API answers with it.
var errDaemonStopping = errors.New("the daemon is stopping")

// RunDaemon runs the healer (monitor, rebuilder, scrubbers, garbage
// collection, census) and serves /metrics, /status and the healer API
// (see healer.Handler), and on an embedded store the objects API on a
// socket in the metadata directory (see DialDaemonObjects), until ctx ends; then it stops taking requests,
// ends the work of running ones (a heal or scrub asked through the API
// stops where it is, like the loops: a stripe whose repair is cut short
// stays queued) and waits for them to answer, stops the loops and the
// provisioners' processes, and returns nil. The caller closes the Store
// afterwards.
func (s *Store) RunDaemon(ctx context.Context, o DaemonOptions) error {
	addr := o.Addr
	if addr == "" {
		addr = s.cfg.Healer.MetricsAddr
	}
	ds := DaemonStore{StoreID: s.storeID}
	if s.cfg.Metastore.Kind != "etcd" {
		// Absolute, as this process opened it: a relative --config makes
		// it relative to this working directory, not the asker's.
		var err error
		if ds.MetadataDir, err = filepath.Abs(s.cfg.MetadataDir); err != nil {
			return fmt.Errorf("daemon: metadata_dir %s: %w", s.cfg.MetadataDir, err)
		}
	}
	// The data path's metrics are served beside the healer's.
	if o.Healer.Registry == nil {
		o.Healer.Registry = prometheus.NewRegistry()
	}
	if err := o.Healer.Registry.Register(s.metrics); err != nil {
		return fmt.Errorf("daemon: metrics: %w", err)
	}
	defer o.Healer.Registry.Unregister(s.metrics)
	h, err := s.NewHealer(ctx, o.Healer)
	if err != nil {
		return err
	}
	defer h.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("daemon: listen on %s: %w", addr, err)
	}
	// On etcd, only the leader's healer runs; the others must not do
	// maintenance asked through their API beside it.
	var leading atomic.Bool
	_, shared := snapshot.Unwrap(s.meta.KV()).(*etcdkv.KV)
	// A daemon that cannot keep its token (a read-only dir on etcd)
	// still heals; its API only reads.
	token, tokenErr := daemonToken(s.cfg)
	if tokenErr != nil {
		s.log.Warn("daemon: no API token: heal, scrub and backend commands cannot reach this daemon", "err", tokenErr)
	}
	mux := http.NewServeMux()
	api := requireToken(h.Handler(addr), token, daemonTokenPath(s.cfg), tokenErr)
	if shared {
		api = s.leaderOnly(api, &leading)
	}
	mux.Handle("/", api)
	serveStore := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ds)
	}
	for path, get := range map[string]http.HandlerFunc{LossWindowPath: s.serveLossWindow, StorePath: serveStore} {
		mux.HandleFunc("GET "+path, get)
		// Without this, "/" (the healer API) took the path's other
		// methods and answered 404.
		mux.HandleFunc(path, getOnly)
	}
	srv := newDaemonServer(mux)
	objLn, objects, err := s.listenObjects()
	if err != nil {
		// The socket is a convenience; the healer is what the daemon is
		// for, so it runs without one, as when the path is too long.
		s.log.Warn("daemon: no objects socket; put, get, ls, stat and rm cannot reach this daemon", "err", err)
		objects = false
	}
	var objSrv *http.Server
	if objects {
		objSrv = newDaemonServer(s.objectsHandler())
		defer os.Remove(objLn.Addr().String())
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	// Requests run under their own context, ended (with a cause the
	// healer API's replies name) when the daemon stops: a heal or scrub
	// asked through the API then stops where it is, as the healer's own
	// loops do, instead of the shutdown waiting for it (under a rate cap,
	// for as long as shutdownGrace, after which the store was closed
	// under it).
	reqCtx, endRequests := context.WithCancelCause(context.WithoutCancel(ctx))
	defer endRequests(nil)
	srv.BaseContext = func(net.Listener) context.Context { return reqCtx }
	var wg sync.WaitGroup
	serveErr := make(chan error, 2)
	serve := func(srv *http.Server, ln net.Listener) {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
			stop()
		}
	}
	wg.Add(2)
	go serve(srv, ln)
	if objSrv != nil {
		objSrv.BaseContext = srv.BaseContext
		wg.Add(1)
		go serve(objSrv, objLn)
	}
	go func() {
		defer wg.Done()
		// On etcd several daemons share one metastore: only the holder of
		// the lease heals and snapshots, so a lost backend is provisioned
		// once. On pebble RunAsLeader just runs the loops.
		_ = s.RunAsLeader(runCtx, func(ctx context.Context) error {
			leading.Store(true)
			defer leading.Store(false)
			return s.runLeaderLoops(ctx, h, !shared)
		})
	}()
	s.log.Info("daemon serving", "addr", ln.Addr().String(), "store", s.storeID)
	if o.Ready != nil {
		o.Ready(ln.Addr().String())
	}
	<-runCtx.Done()
	s.log.Info("daemon stopping")
	endRequests(errDaemonStopping)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	if objSrv != nil {
		shutErr = errors.Join(shutErr, objSrv.Shutdown(sctx))
	}
	stop()
	wg.Wait()
	select {
	case err := <-serveErr:
		return fmt.Errorf("daemon: serve: %w", err)
	default:
	}
	if shutErr != nil {
		return fmt.Errorf("daemon: shutdown: %w", shutErr)
	}
	return nil
}

// newDaemonServer is the daemon's HTTP server. ReadHeaderTimeout bounds
// a client sending its headers slowly (slowloris); IdleTimeout closes a
// keep-alive connection left idle, which with neither it nor ReadTimeout
// set waits for its next request for ever. There is no ReadTimeout or
// WriteTimeout: heal and scrub run for minutes and stream progress, and a
// ReadTimeout that expires while a handler runs cancels its request's
// context (net/http's background read fails).
func newDaemonServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
}

// finalSnapshotWait bounds the snapshot a stopping daemon takes.
const finalSnapshotWait = 30 * time.Second

// runLeaderLoops runs the healer and the metadata snapshotter until ctx
// ends. A store that cannot snapshot (no master key) still heals; the
// reason is logged once, since `healstore status` shows the loss window.
//
// With final, it then takes one more snapshot if anything changed since
// the newest: a machine shut down cleanly (a VM's reboot) loses no
// metadata, where the schedule left up to an interval of changes only in
// the local metastore. Not on etcd, where other processes go on and the
// next leader's loop snapshots.
func (s *Store) runLeaderLoops(ctx context.Context, h *Healer, final bool) error {
	var wg sync.WaitGroup
	sn, err := s.NewSnapshotter(s.cfg.Snapshots)
	if err != nil {
		s.log.Warn("daemon: metadata snapshots are off", "err", err)
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sn.Run(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("daemon: snapshotter stopped", "err", err)
			}
		}()
	}
	err = h.Run(ctx)
	wg.Wait()
	if final && sn != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalSnapshotWait)
		defer cancel()
		if _, serr := sn.Take(sctx, false); serr != nil {
			s.log.Warn("daemon: no final metadata snapshot", "err", serr)
		}
	}
	return err
}

// LossWindowPath is where a daemon serves its store's LossWindow as JSON,
// so `healstore status` can show it while the daemon holds the store.
const LossWindowPath = "/v1/loss-window"

func (s *Store) serveLossWindow(w http.ResponseWriter, r *http.Request) {
	lw, err := s.LossWindow(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(lw)
}

// DaemonLossWindow asks the daemon at addr for its store's loss window.
func DaemonLossWindow(ctx context.Context, addr string) (*LossWindow, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+LossWindowPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon at %s: loss window: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("daemon at %s: loss window: %s", addr, resp.Status)
	}
	var lw LossWindow
	if err := json.NewDecoder(resp.Body).Decode(&lw); err != nil {
		return nil, fmt.Errorf("daemon at %s: loss window: %w", addr, err)
	}
	return &lw, nil
}

// getOnly answers a request to a GET route with another method.
func getOnly(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "GET, HEAD")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("%s %s: method not allowed; use GET", r.Method, r.URL.Path)})
}

// StorePath is where a daemon says which store it serves (DaemonStore).
// Every store's config names 127.0.0.1:9310 unless edited, so the daemon
// a command finds there may be another store's.
const StorePath = "/v1/store"

// DaemonStore is what a daemon answers at StorePath.
type DaemonStore struct {
	StoreID string `json:"store_id"`
	// MetadataDir is the embedded metastore's directory, absolute; ""
	// on etcd.
	MetadataDir string `json:"metadata_dir,omitempty"`
}

// AskDaemonStore asks the daemon at addr which store it serves, which
// takes no census (unlike its status); nil, nil if it does not say (a
// daemon older than StorePath). An error matches healer.ErrNoDaemon when
// nothing listens there.
func AskDaemonStore(ctx context.Context, addr string) (*DaemonStore, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+StorePath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial") {
			return nil, fmt.Errorf("%w (%s)", healer.ErrNoDaemon, addr)
		}
		return nil, fmt.Errorf("daemon at %s: which store: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("daemon at %s: which store: %s", addr, resp.Status)
	}
	var ds DaemonStore
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ds); err != nil {
		return nil, fmt.Errorf("daemon at %s: which store: %w", addr, err)
	}
	return &ds, nil
}

// ErrOtherStore means the daemon asked serves another store than the
// config's.
var ErrOtherStore = errors.New("the daemon serves another store")

// CheckDaemonStore returns an error matching ErrOtherStore unless the
// daemon at addr serves cfg's embedded (pebble) store: the one whose
// metadata directory is cfg.MetadataDir, however named. A command that
// finds the store's metadata held by another process talks to the daemon
// at healer.metrics_addr instead; another store's daemon there would have
// healed, drained or removed backends of that store in this one's name.
// A daemon that does not say which store it serves (older than
// StorePath) is taken as cfg's.
func CheckDaemonStore(ctx context.Context, addr string, cfg *Config) error {
	ds, err := AskDaemonStore(ctx, addr)
	if err != nil || ds == nil {
		return err
	}
	return checkServes(ds, addr, cfg)
}

// DaemonServes is CheckDaemonStore asked within wait, a caller's first
// contact with the daemon (what follows, a status or a heal, may take
// long). said reports that the daemon said which store it serves: one
// that did is known to be there and cfg's, one older than StorePath only
// to answer HTTP. silent reports that nothing answered within wait though
// something accepts connections there: a hung or stopped (SIGSTOP)
// daemon, which would otherwise be waited for without end.
func DaemonServes(ctx context.Context, addr string, cfg *Config, wait time.Duration) (said, silent bool, err error) {
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ds, err := AskDaemonStore(pctx, addr)
	if err == nil && ds != nil {
		said, err = true, checkServes(ds, addr, cfg)
	}
	silent = err != nil && pctx.Err() != nil && ctx.Err() == nil &&
		!errors.Is(err, healer.ErrNoDaemon) && !errors.Is(err, ErrOtherStore)
	return said, silent, err
}

// checkServes is CheckDaemonStore given the daemon's answer.
func checkServes(ds *DaemonStore, addr string, cfg *Config) error {
	other := func() error {
		where := "a store on etcd"
		if ds.MetadataDir != "" {
			where = "metadata_dir " + ds.MetadataDir
		}
		return fmt.Errorf("the daemon at %s serves store %s (%s), not this config's (%s): %w; give each store its own healer.metrics_addr",
			addr, ds.StoreID, where, cfg.metadataWhere(), ErrOtherStore)
	}
	switch {
	case cfg.Metastore.Kind == "etcd" && ds.MetadataDir == "":
		// Both on etcd: the caller, which can open the store, compares
		// the store IDs.
		return nil
	case cfg.Metastore.Kind == "etcd" || ds.MetadataDir == "":
		return other()
	}
	theirs, err := os.Stat(ds.MetadataDir)
	if err != nil {
		return other()
	}
	ours, err := os.Stat(cfg.MetadataDir)
	if err != nil || !os.SameFile(ours, theirs) {
		return other()
	}
	return nil
}

// maintenanceRoutes are the healer API's requests that repair, scrub,
// collect garbage, move shards, probe the backends (a probe records their
// states and queues the stripes of one found down) or tune the healer that
// does so: on a shared (etcd) metastore only the maintenance leader's
// daemon takes them. Settings given to an idle healer would be accepted
// and change nothing the user sees.
var maintenanceRoutes = []string{"POST /v1/heal", "POST /v1/scrub", "POST /v1/gc", "POST /v1/probe", "PUT /v1/settings", "POST /v1/backends/{name}/drain", "DELETE /v1/backends/{name}"}

// leaderOnly passes the healer API through while this daemon leads the
// store's maintenance (leading) and answers its maintenance requests with
// 503 and the leader's name otherwise: this daemon's healer is idle, and
// work done through it would run beside the leader's.
func (s *Store) leaderOnly(next http.Handler, leading *atomic.Bool) http.Handler {
	refuse := http.NewServeMux()
	for _, route := range maintenanceRoutes {
		refuse.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
			if leading.Load() {
				next.ServeHTTP(w, r)
				return
			}
			leader, _ := s.Leader(r.Context())
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			msg := (&NotLeaderError{Leader: leader}).Error() + "; this daemon's healer waits: ask the leader's daemon, on its machine"
			_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
		})
	}
	refuse.Handle("/", next)
	return refuse
}
