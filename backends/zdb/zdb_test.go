package zdb

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/backendtest"
	"github.com/healstore/healstore/backends/zdb/zdbtest"
)

const (
	testAdmin = "admin-secret-pw"
	testNSPw  = "ns-secret-pw"
)

func spec(addr, ns string) backends.Spec {
	return backends.Spec{Name: "zdb-" + ns, Kind: backends.KindZDB, Address: addr, Namespace: ns}
}

func openT(t *testing.T, addr, ns, pw string) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := Open(ctx, spec(addr, ns), pw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newNS creates a fresh password-protected namespace through the admin
// helper, as provisioning does.
func newNS(t *testing.T, addr, admin string, maxSize int64) string {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	ns := "hs-test-" + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := DialAdmin(ctx, addr, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.CreateNamespace(ctx, ns, testNSPw, maxSize); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if a, err := DialAdmin(ctx, addr, admin); err == nil {
			if err := a.DeleteNamespace(ctx, ns); err != nil {
				t.Logf("cleanup of namespace %s: %v", ns, err)
			}
			a.Close()
		}
	})
	return ns
}

// factory builds the conformance Factory for a server at addr. outage,
// when not nil, starts a private double for the outage test.
func factory(addr, admin string, private bool) backendtest.Factory {
	f := backendtest.Factory{
		Open: func(t *testing.T) backends.Backend {
			return openT(t, addr, newNS(t, addr, admin, 0), testNSPw)
		},
		OpenLimited: func(t *testing.T, limit int64) backends.Backend {
			return openT(t, addr, newNS(t, addr, admin, limit), testNSPw)
		},
		MaxValueSize:  MaxValueSize,
		CapacityKnown: true,
		OpenWrongCredentials: func(t *testing.T) (backends.Backend, error) {
			ns := newNS(t, addr, admin, 0)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			b, err := Open(ctx, spec(addr, ns), "wrong-"+testNSPw)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		OpenUnreachable: func(t *testing.T) (backends.Backend, error) {
			return openT(t, backendtest.ClosedAddr(t), "ns", testNSPw), nil
		},
		OpenHanging: func(t *testing.T) (backends.Backend, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			b, err := Open(ctx, spec(backendtest.HangingServer(t), "ns"), testNSPw)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		Secrets: []string{testNSPw, admin},
	}
	if private {
		f.OpenWithOutage = func(t *testing.T) (backends.Backend, func(), func()) {
			s := zdbtest.New(t, zdbtest.Options{AdminPassword: testAdmin})
			b := openT(t, s.Addr(), newNS(t, s.Addr(), testAdmin, 0), testNSPw)
			return b, s.Stop, func() {
				if err := s.Restart(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return f
}

func TestConformanceDouble(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{AdminPassword: testAdmin, ScanBatch: 37})
	backendtest.Run(t, factory(s.Addr(), testAdmin, true))
}

// TestConformanceReal runs the same suite against a real 0-db named by
// HEALSTORE_ZDB_ADDR (admin password in HEALSTORE_ZDB_ADMIN). Each test
// makes its own namespace and deletes it afterwards.
func TestConformanceReal(t *testing.T) {
	addr := os.Getenv("HEALSTORE_ZDB_ADDR")
	if addr == "" {
		// 0-db is not installable here (see the protocol reference), so
		// this run is opt-in even under HEALSTORE_REQUIRE_COMPONENTS.
		t.Skip("HEALSTORE_ZDB_ADDR not set: no real 0-db to test against (the in-process double ran above)")
	}
	backendtest.Run(t, factory(addr, os.Getenv("HEALSTORE_ZDB_ADMIN"), false))
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestErrorReplies(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{AdminPassword: testAdmin})
	b := openT(t, s.Addr(), newNS(t, s.Addr(), testAdmin, 0), testNSPw)
	defer b.Close()
	ctx := ctx5(t)
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cmd, reply string
		kind       error
	}{
		{"SET", "Cannot write data right now", backends.ErrUnavailable},
		{"SET", "No space left on this namespace", backends.ErrFull},
		{"SET", "Namespace is in read-only mode", backends.ErrAuth},
		{"SET", "Namespace is temporarily locked (read-only)", backends.ErrUnavailable},
		{"SET", "Something 0-db never said", backends.ErrCorruptReply},
		{"GET", "Namespace is temporarily frozen (read-write disabled)", backends.ErrUnavailable},
	} {
		s.Fail(c.cmd, c.reply)
		var err error
		if c.cmd == "SET" {
			err = b.Put(ctx, "k", []byte("new"))
		} else {
			_, err = b.Get(ctx, "k")
		}
		s.Fail(c.cmd, "")
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.reply) {
			t.Errorf("%s answered %q: got %v, want kind %v", c.cmd, c.reply, err, c.kind)
		}
	}
	s.Garble("GET", true)
	_, err := b.Get(ctx, "k")
	s.Garble("GET", false)
	if !errors.Is(err, backends.ErrCorruptReply) {
		t.Fatalf("garbled GET: %v", err)
	}
	// The garbled connection was dropped; the backend goes on.
	if got, err := b.Get(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("Get after a garbled reply: %q, %v", got, err)
	}
}

func TestFillUp(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{AdminPassword: testAdmin})
	ns := newNS(t, s.Addr(), testAdmin, 0)
	b := openT(t, s.Addr(), ns, testNSPw)
	defer b.Close()
	ctx := ctx5(t)
	if err := b.Put(ctx, "a", make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	s.FillUp(ns)
	if err := b.Put(ctx, "b", []byte("x")); !errors.Is(err, backends.ErrFull) {
		t.Fatalf("Put into a filled namespace: %v", err)
	}
	r, err := b.Probe(ctx)
	if err != nil || r.Capacity != (backends.Capacity{Known: true, Used: 1000, Limit: 1000, Free: 0}) {
		t.Fatalf("Probe of a filled namespace: %+v, %v", r, err)
	}
}

func TestUnlimitedNamespaceReportsDisk(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{DiskFree: 1 << 30})
	b := openT(t, s.Addr(), newNS(t, s.Addr(), "", 0), testNSPw)
	defer b.Close()
	ctx := ctx5(t)
	b.Put(ctx, "a", make([]byte, 100))
	r, err := b.Probe(ctx)
	if err != nil || r.Capacity != (backends.Capacity{Known: true, Used: 100, Limit: 100 + 1<<30, Free: 1 << 30}) {
		t.Fatalf("Probe without maxsize: %+v, %v", r, err)
	}
}

func TestSlowServerHonoursDeadline(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{})
	b := openT(t, s.Addr(), newNS(t, s.Addr(), "", 0), testNSPw)
	defer b.Close()
	s.SetDelay(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Get(ctx, "k")
	if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get from a slow server: %v", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("Get from a slow server took %v", d)
	}
	s.SetDelay(0)
	if err := b.Put(ctx5(t), "k", []byte("v")); err != nil {
		t.Fatalf("Put once the server is quick again: %v", err)
	}
}

// lateTimer is a context whose deadline has a timer that has not fired yet:
// Deadline is set but Err stays nil, as it does for a moment after the
// deadline passes on a loaded machine.
type lateTimer struct {
	context.Context
	dl time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.dl, true }

// The socket deadline can fire before ctx's timer does. The error must still
// say the deadline passed, and the command must not be retried (a retry
// would run with no time left, or block for the server's whole delay).
func TestSocketDeadlineBeforeCtxTimer(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{})
	b := openT(t, s.Addr(), newNS(t, s.Addr(), "", 0), testNSPw)
	defer b.Close()
	dials := 0
	dial := b.pool.dial
	b.pool.dial = func(ctx context.Context) (*conn, error) {
		dials++
		return dial(ctx)
	}
	s.SetDelay(2 * time.Second)
	ctx := lateTimer{Context: context.Background(), dl: time.Now().Add(200 * time.Millisecond)}
	start := time.Now()
	_, err := b.Get(ctx, "k")
	if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get past a deadline whose timer has not fired: %v", err)
	}
	if dials != 0 {
		t.Fatalf("Get past the deadline was retried on %d new connection(s): %v", dials, err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("Get past the deadline took %v: it was retried", d)
	}
}

func TestDroppedConnectionsAreReplaced(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{})
	b := openT(t, s.Addr(), newNS(t, s.Addr(), "", 0), testNSPw)
	defer b.Close()
	ctx := ctx5(t)
	for i := 0; i < 5; i++ {
		if err := b.Put(ctx, "k", []byte{byte(i)}); err != nil {
			t.Fatalf("Put %d after dropping connections: %v", i, err)
		}
		s.DropConnections()
	}
}

func TestTooLargeKeepsConnection(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{})
	b := openT(t, s.Addr(), newNS(t, s.Addr(), "", 0), testNSPw)
	defer b.Close()
	ctx := ctx5(t)
	if err := b.Put(ctx, "big", make([]byte, MaxValueSize+1)); !errors.Is(err, backends.ErrTooLarge) {
		t.Fatalf("Put of 8 MiB+1: %v", err)
	}
	if err := b.Put(ctx, "big", make([]byte, MaxValueSize)); err != nil {
		t.Fatalf("Put of exactly 8 MiB: %v", err)
	}
}

func TestOpen(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{AdminPassword: testAdmin})
	ns := newNS(t, s.Addr(), testAdmin, 0)
	ctx := ctx5(t)
	// Wrong and missing passwords fail at Open, and say nothing secret.
	for _, pw := range []string{"wrong-password", ""} {
		_, err := Open(ctx, spec(s.Addr(), ns), pw)
		if !errors.Is(err, backends.ErrAuth) {
			t.Fatalf("Open with password %q: %v", pw, err)
		}
		if strings.Contains(err.Error(), testNSPw) || (pw != "" && strings.Contains(err.Error(), pw)) {
			t.Fatalf("Open error leaks a password: %v", err)
		}
	}
	// A missing namespace is an outage, not a refusal: Open succeeds and
	// calls say unavailable.
	b, err := Open(ctx, spec(s.Addr(), "nope"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "k"); !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "Namespace not found") {
		t.Fatalf("Get on a missing namespace: %v", err)
	}
	b.Close()
	if _, err := b.Get(ctx, "k"); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Get after Close: %v", err)
	}
	for _, bad := range []backends.Spec{
		{Name: "x", Kind: backends.KindZDB, Address: "nohostport", Namespace: "n"},
		{Name: "x", Kind: backends.KindLocal, Path: "/tmp"},
		{Name: "x", Kind: backends.KindZDB, Address: "h:1"},
	} {
		if _, err := Open(ctx, bad, ""); err == nil {
			t.Errorf("Open(%+v) accepted a bad spec", bad)
		}
	}
}

func TestAdmin(t *testing.T) {
	s := zdbtest.New(t, zdbtest.Options{AdminPassword: testAdmin})
	ctx := ctx5(t)
	if _, err := DialAdmin(ctx, s.Addr(), "wrong"); !errors.Is(err, backends.ErrAuth) {
		t.Fatalf("DialAdmin with a wrong password: %v", err)
	}
	a, err := DialAdmin(ctx, s.Addr(), testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.CreateNamespace(ctx, "n1", "pw", 4096); err != nil {
		t.Fatal(err)
	}
	info, ok := s.Namespace("n1")
	if !ok || !info.Password || info.Public || info.MaxSize != 4096 {
		t.Fatalf("namespace made by CreateNamespace: %+v", info)
	}
	if err := a.CreateNamespace(ctx, "n1", "pw", 0); !errors.Is(err, ErrNamespaceExists) {
		t.Fatalf("CreateNamespace of an existing name: %v", err)
	}
	if ok, err := a.NamespaceExists(ctx, "n1"); !ok || err != nil {
		t.Fatalf("NamespaceExists: %v %v", ok, err)
	}
	if err := a.DeleteNamespace(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteNamespace(ctx, "n1"); err != nil {
		t.Fatalf("DeleteNamespace of a missing namespace: %v", err)
	}
	if ok, err := a.NamespaceExists(ctx, "n1"); ok || err != nil {
		t.Fatalf("NamespaceExists after delete: %v %v", ok, err)
	}
	// Against a server without --admin, any password is fine.
	open := zdbtest.New(t, zdbtest.Options{})
	a2, err := DialAdmin(ctx, open.Addr(), "whatever")
	if err != nil {
		t.Fatal(err)
	}
	a2.Close()
}

// crcCollision returns two different 8-byte values with the same CRC32-C,
// found by a deterministic birthday search (~80k tries). The counter is
// spread over all 64 bits by an odd multiplier: values that differ only
// within 32 adjacent bits never share a CRC32.
func crcCollision(t *testing.T) (a, b []byte) {
	t.Helper()
	table := crc32.MakeTable(crc32.Castagnoli)
	val := func(i uint64) []byte { return binary.LittleEndian.AppendUint64(nil, i*0x9e3779b97f4a7c15) }
	seen := make(map[uint32]uint64)
	for i := uint64(0); i < 1<<20; i++ {
		c := crc32.Checksum(val(i), table)
		if j, ok := seen[c]; ok {
			return val(j), val(i)
		}
		seen[c] = i
	}
	t.Fatal("no CRC32-C collision among 2^20 counters")
	return nil, nil
}

// TestSetUnchangedCollision: 0-db keeps the old value when a SET's CRC32
// matches it, and answers nil. Put must see that the bytes differ and fail
// rather than report a value stored that is not.
func TestSetUnchangedCollision(t *testing.T) {
	a, b := crcCollision(t)
	s := zdbtest.New(t, zdbtest.Options{AdminPassword: testAdmin})
	be := openT(t, s.Addr(), newNS(t, s.Addr(), testAdmin, 0), testNSPw)
	defer be.Close()
	ctx := ctx5(t)
	if err := be.Put(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	if err := be.Put(ctx, "k", a); err != nil {
		t.Fatalf("Put of the same bytes (SET answers unchanged): %v", err)
	}
	err := be.Put(ctx, "k", b)
	if !errors.Is(err, backends.ErrCorruptReply) || !strings.Contains(err.Error(), "same CRC32") {
		t.Fatalf("Put of %x over %x (same CRC32-C): %v, want ErrCorruptReply", b, a, err)
	}
	if got, err := be.Get(ctx, "k"); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("stored %x, %v; want the old value %x", got, err, a)
	}
}

// TestCollides: after an unchanged SET, only a stored value with our CRC32
// and other bytes is a dropped write; another CRC32 means a concurrent Put
// landed after ours.
func TestCollides(t *testing.T) {
	a, b := crcCollision(t)
	for _, c := range []struct {
		ours, stored []byte
		want         bool
	}{
		{a, a, false},
		{a, b, true},
		{b, a, true},
		{a, []byte("a later writer's value"), false},
		{[]byte{}, []byte{}, false},
		{[]byte{}, a, false},
	} {
		if got := collides(c.ours, c.stored); got != c.want {
			t.Errorf("collides(%x, %x) = %v, want %v", c.ours, c.stored, got, c.want)
		}
	}
}
