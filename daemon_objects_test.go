package healstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/healer"
)

// TestDaemonObjects: a daemon serves the objects of the store it holds on
// a socket only its user can open, and each call answers as the store's
// own would: the same bytes, the same typed errors. A put whose body ends
// early stores nothing.
func TestDaemonObjects(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	startDaemon(t, hs)
	ctx := context.Background()
	sock := filepath.Join(hs.cfg.MetadataDir, ObjectsSocketName)
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("objects socket: %v %v", fi, err)
	}
	d, err := DialDaemonObjects(ctx, hs.cfg, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	data := make([]byte, 300_000) // several 32 KiB blocks
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	info, err := d.Put(ctx, "dir/a", bytes.NewReader(data))
	if err != nil || info.Size != int64(len(data)) || info.Blocks < 2 {
		t.Fatalf("put: %+v %v", info, err)
	}
	r, err := d.Open(ctx, "dir/a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) || r.Size() != int64(len(data)) || r.Info().ID != info.ID {
		t.Fatalf("get: %d bytes (want %d), %v, info %+v", len(got), len(data), err, r.Info())
	}
	if st, err := d.Stat(ctx, "dir/a"); err != nil || st.ID != info.ID || st.Redundancy == nil || st.Redundancy.MinMargin != 2 {
		t.Fatalf("stat: %+v %v", st, err)
	}
	if _, err := d.Put(ctx, "dir/b", bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	objs, next, err := d.List(ctx, "dir/", "", 1)
	if err != nil || len(objs) != 1 || objs[0].Name != "dir/a" || next != "dir/a" {
		t.Fatalf("list page 1: %+v %q %v", objs, next, err)
	}
	if objs, next, err = d.List(ctx, "dir/", next, 1); err != nil || len(objs) != 1 || objs[0].Name != "dir/b" {
		t.Fatalf("list page 2: %+v %q %v", objs, next, err)
	}

	// A body that fails half-way (the putting process died): no object.
	half := io.MultiReader(bytes.NewReader(data[:100_000]), iotestErrReader{})
	if _, err := d.Put(ctx, "dir/torn", half); err == nil {
		t.Fatal("put of a torn body succeeded")
	}
	if _, err := hs.s.Stat(ctx, "dir/torn"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("torn put left an object: %v", err)
	}

	if err := d.Delete(ctx, "dir/a"); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		func() error { _, err := d.Open(ctx, "dir/a"); return err }(),
		func() error { _, err := d.Stat(ctx, "dir/a"); return err }(),
		d.Delete(ctx, "dir/a"),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("after delete: %v, want ErrNotFound", err)
		}
	}
	if _, err := d.Put(ctx, "", bytes.NewReader(nil)); err == nil {
		t.Fatal("put of an empty name succeeded")
	}
}

// iotestErrReader fails every read.
type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("the putting process died") }

// TestDaemonObjectsSocketGoesWithDaemon: the socket is removed when the
// daemon stops, and one left behind by a killed daemon is not taken for a
// daemon: dialing it fails, so a command opens the store itself.
func TestDaemonObjectsSocketGoesWithDaemon(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- hs.s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { ready <- a }})
	}()
	<-ready
	sock := filepath.Join(hs.cfg.MetadataDir, ObjectsSocketName)
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after the daemon stopped: %v", err)
	}
	if _, err := DialDaemonObjects(context.Background(), hs.cfg, time.Second); err == nil {
		t.Fatal("dialed a daemon that stopped")
	}
	// What a SIGKILLed daemon leaves: a socket file nobody listens on.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("stale socket: %v %v", fi, err)
	}
	if _, err := DialDaemonObjects(context.Background(), hs.cfg, time.Second); err == nil {
		t.Fatal("dialed a stale socket")
	}
}

// TestDaemonReaderRefusesShortReply: a get the daemon cuts short (a block
// it could not read, a daemon stopping) or answers without describing the
// object is an error, never a short object.
func TestDaemonReaderRefusesShortReply(t *testing.T) {
	cfg := &Config{MetadataDir: t.TempDir()}
	ln, err := net.Listen("unix", filepath.Join(cfg.MetadataDir, ObjectsSocketName))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+listPath, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"objects":[]}`) })
	mux.HandleFunc("GET "+objectPath, func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name != "bare" {
			w.Header().Set(objectInfoHeader, `{"name":"`+name+`","size":1000}`)
		}
		w.Header().Set("Content-Length", "1000")
		w.Write(make([]byte, 500))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	d, err := DialDaemonObjects(context.Background(), cfg, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, err := d.Open(context.Background(), "short")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r)
	r.Close()
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %d of 1000 bytes, err %v: want io.ErrUnexpectedEOF", n, err)
	}
	if _, err := d.Open(context.Background(), "bare"); err == nil {
		t.Fatal("a reply without the object's description was taken")
	}
}

// TestDaemonObjectsAnyName: every name the store takes travels to the
// daemon and back. The object's description rides in a reply header, and
// a DEL (0x7f) in a name, which JSON leaves as it is, made the reply a
// malformed header: get through the daemon failed for an object that get
// without it reads.
func TestDaemonObjectsAnyName(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	startDaemon(t, hs)
	ctx := context.Background()
	d, err := DialDaemonObjects(ctx, hs.cfg, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"a\x7fb", "a\x01b\nc\td", "é\u2028x\U0001F600", " a b%2F?&=#+ "} {
		if _, err := d.Put(ctx, name, bytes.NewReader([]byte("x"))); err != nil {
			t.Errorf("put %q: %v", name, err)
			continue
		}
		r, err := d.Open(ctx, name)
		if err != nil {
			t.Errorf("get %q: %v", name, err)
			continue
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(b) != "x" || r.Info().Name != name {
			t.Errorf("get %q: %q %v, described as %q", name, b, err, r.Info().Name)
		}
		if st, err := d.Stat(ctx, name); err != nil || st.Name != name {
			t.Errorf("stat %q: %+v %v", name, st, err)
		}
	}
}

// TestDaemonObjectsNoneOnEtcd: a store on etcd has no objects socket, and
// dialing one says so as for a store whose daemon does not run (the error
// matches os.ErrNotExist): a command opens the store itself, and its
// errors are not followed by a line about a daemon that did not answer.
func TestDaemonObjectsNoneOnEtcd(t *testing.T) {
	cfg := &Config{MetadataDir: t.TempDir()}
	cfg.Metastore.Kind = "etcd"
	if _, err := DialDaemonObjects(context.Background(), cfg, time.Second); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dial on etcd: %v, want an error matching os.ErrNotExist", err)
	}
}

// TestDaemonHealsWithoutObjectsSocket: a daemon that cannot serve its
// objects socket (a metadata directory on a file system without sockets,
// or something else at its path) still runs the healer and its API, as one
// whose socket path is too long does, and says why put, get, ls, stat and
// rm cannot reach it. It refused to start: the socket, a convenience, cost
// the store its healing.
func TestDaemonHealsWithoutObjectsSocket(t *testing.T) {
	var logMu sync.Mutex
	var logs bytes.Buffer
	hs := newHealStore(t, 6, 4, 2, func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	})
	sock := filepath.Join(hs.cfg.MetadataDir, ObjectsSocketName)
	if err := os.MkdirAll(filepath.Join(sock, "in the way"), 0o700); err != nil {
		t.Fatal(err)
	}
	// Not startDaemon: its cleanup waits for a daemon that failed to
	// start, for ever.
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- hs.s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { ready <- a }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon did not start: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()
	if st, err := (&healer.Client{Addr: addr}).Status(context.Background()); err != nil || st.StoreID == "" {
		t.Fatalf("daemon status: %+v %v", st, err)
	}
	if _, err := DialDaemonObjects(context.Background(), hs.cfg, time.Second); err == nil {
		t.Fatal("dialed a socket that is a directory")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !bytes.Contains(logs.Bytes(), []byte("cannot reach this daemon")) {
		t.Fatalf("no warning logged: %s", logs.Bytes())
	}
}
