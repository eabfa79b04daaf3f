package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/metastore/metastoretest"
)

// On an etcd metastore shared by several processes, heal (like scrub,
// drain and backend rm) runs its healer here only while it leads the
// store's maintenance: beside a daemon's healer it is refused, naming the
// daemon, and it runs once the daemon is gone.
func TestMaintenanceCommandsWaitForTheLeader(t *testing.T) {
	path := etcdStore(t, "hs-cli-test")
	t.Setenv("HEALSTORE_CONFIG", path)
	s, release := standInLeader(t, path, "daemon-elsewhere/42")
	_, errs, code := cli(t, "", "heal")
	if code != exitError || !strings.Contains(errs, "daemon-elsewhere/42") || !strings.Contains(errs, "leads this store's maintenance") {
		t.Fatalf("heal while a daemon leads: exit %d, stderr %q; want exit %d naming the daemon", code, errs, exitError)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := cli(t, "", "heal"); code != 0 {
		t.Fatalf("heal once the daemon is gone: exit %d, %s %s", code, out, errs)
	}

	// A daemon of this store on this machine (at healer.metrics_addr)
	// that leads does the work for the command.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	raw, _ := os.ReadFile(path)
	raw = []byte(strings.Replace(string(raw), `metrics_addr = "127.0.0.1:9310"`, fmt.Sprintf("metrics_addr = %q", addr), 1))
	if !strings.Contains(string(raw), addr) {
		t.Fatal("the config has no metrics_addr to replace")
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	dctx, dstop := context.WithCancel(context.Background())
	ready, ddone := make(chan struct{}), make(chan error, 1)
	go func() {
		ddone <- s.RunDaemon(dctx, healstore.DaemonOptions{Addr: addr, Ready: func(string) { close(ready) }})
	}()
	defer func() {
		dstop()
		if err := <-ddone; err != nil {
			t.Error(err)
		}
	}()
	<-ready
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if id, _ := s.Leader(context.Background()); id != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon was not elected")
		}
	}
	start := time.Now()
	if out, errs, code := cli(t, "", "heal"); code != 0 || strings.Contains(errs, "waiting") {
		t.Fatalf("heal beside this machine's leading daemon: exit %d, %s %s; want the daemon to do it", code, out, errs)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("heal beside this machine's leading daemon took %s: it waited for the leadership instead of asking the daemon", d)
	}
}

// etcdStore makes a store with healstore init and moves its metadata to
// the test's etcd (under a fresh prefix named after name), returning its
// config's path.
func etcdStore(t *testing.T, name string) string {
	t.Helper()
	eps := metastoretest.EtcdEndpoints(t)
	prefix := metastoretest.EtcdPrefix(t, eps, name)
	store := filepath.Join(t.TempDir(), "store")
	if _, errs, code := cli(t, "", "init", "--k", "2", "--m", "1", "--backends", "4", store); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	path := filepath.Join(store, "healstore.toml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	etcd := fmt.Sprintf("[metastore]\nkind = \"etcd\"\nendpoints = [%q]\nprefix = %q\n", eps[0], prefix)
	conf := strings.Replace(string(raw), "[metastore]\nkind = \"pebble\"\n", etcd, 1)
	if !strings.Contains(conf, prefix) {
		t.Fatal("the config written by init has no [metastore] kind = \"pebble\" to replace")
	}
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// init marked the backends as its pebble store's; the etcd store is a
	// new one.
	marks, _ := filepath.Glob(filepath.Join(store, "backends", "*", "*"))
	for _, m := range marks {
		if err := os.RemoveAll(m); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// standInLeader opens the store of the config at path and holds its
// maintenance leadership as identity, as a daemon elsewhere would, until
// release (or the test's end). release returns what RunAsLeader returned.
func standInLeader(t *testing.T, path, identity string) (*healstore.Store, func() error) {
	t.Helper()
	cfg, err := healstore.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	elected, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.RunAsLeader(ctx, func(ctx context.Context) error { <-ctx.Done(); return nil },
			healstore.LeaderOptions{TTL: 2 * time.Second, Identity: identity, OnElected: func(string) { close(elected) }})
	}()
	var once sync.Once
	var runErr error
	release := func() error {
		once.Do(func() { stop(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { release(); s.Close() })
	select {
	case <-elected:
	case <-time.After(15 * time.Second):
		t.Fatal("the stand-in daemon was not elected")
	}
	return s, release
}
