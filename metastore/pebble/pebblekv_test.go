package pebblekv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/metastoretest"
)

func factory(t *testing.T) metastore.KV {
	kv, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	return kv
}

func TestKV(t *testing.T)    { metastoretest.RunKV(t, factory) }
func TestStore(t *testing.T) { metastoretest.RunStore(t, factory) }

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kv, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := metastore.New(kv)
	id, err := s.StoreID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := &metastore.Stripe{ID: [16]byte{1}, Object: [16]byte{9}, K: 1, M: 1, Shards: []metastore.ShardLoc{{Backend: "a", Key: "k0"}, {Backend: "b", Key: "k1"}}}
	o := &metastore.Object{Name: "kept", ID: [16]byte{9}, Size: 5, Stripes: [][16]byte{st.ID}}
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{st}, []metastore.RepairItem{{Stripe: st.ID, Margin: 0}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	kv, err = Open(dir)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer kv.Close()
	s = metastore.New(kv)
	if got, err := s.StoreID(ctx); err != nil || got != id {
		t.Fatalf("store id after reopen %q, %v; want %q", got, err, id)
	}
	got, err := s.GetObject(ctx, "kept")
	if err != nil || got.ID != o.ID {
		t.Fatalf("object after reopen: %+v, %v", got, err)
	}
	if ids, _ := s.Queue(ctx, 0); len(ids) != 1 {
		t.Fatalf("queue after reopen: %v", ids)
	}
	if problems, err := s.Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("check after reopen: %q, %v", problems, err)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	kv, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	_, err = Open(dir)
	if !errors.Is(err, metastore.ErrLocked) || !strings.Contains(err.Error(), "in use by another healstore process") {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

// TestMain lets the cross-process tests run the test binary again as
// another process (HEALSTORE_PEBBLE_HELPER=hold|write).
func TestMain(m *testing.M) {
	if mode := os.Getenv("HEALSTORE_PEBBLE_HELPER"); mode != "" {
		helperProcess(mode)
	}
	os.Exit(m.Run())
}

func helperProcess(mode string) {
	dir := os.Getenv("HEALSTORE_PEBBLE_DIR")
	kv, err := Open(dir)
	if err != nil {
		fmt.Println("open error:", err)
		os.Exit(2)
	}
	switch mode {
	case "hold":
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	case "write":
		// Commit batches forever, acknowledging each after Commit returns.
		for i := 0; ; i++ {
			var b metastore.Batch
			b.Put(fmt.Appendf(nil, "ack/%08d", i), bytes.Repeat([]byte{'x'}, 100))
			b.Put([]byte("last"), fmt.Append(nil, i))
			if err := kv.Commit(context.Background(), &b); err != nil {
				fmt.Println("commit error:", err)
				os.Exit(2)
			}
			fmt.Println(i)
		}
	}
	kv.Close()
	os.Exit(0)
}

func helper(t *testing.T, mode, dir string) (*exec.Cmd, *bufio.Scanner, func()) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "HEALSTORE_PEBBLE_HELPER="+mode, "HEALSTORE_PEBBLE_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(stdout), func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }
}

func TestOtherProcessIsLockedOut(t *testing.T) {
	dir := t.TempDir()
	_, out, stop := helper(t, "hold", dir)
	defer stop()
	if !out.Scan() || out.Text() != "ready" {
		t.Fatalf("helper did not open the directory: %q", out.Text())
	}
	_, err := Open(dir)
	if !errors.Is(err, metastore.ErrLocked) || !strings.Contains(err.Error(), "metadata directory "+dir+" is in use by another healstore process") {
		t.Fatalf("open while another process holds it: %v", err)
	}
	stop()
	kv, err := Open(dir)
	if err != nil {
		t.Fatalf("open after the other process exited: %v", err)
	}
	kv.Close()
}

// TestKilledWriterLosesNoAcknowledgedCommit SIGKILLs a process that is
// committing and checks that every commit it acknowledged survived.
func TestKilledWriterLosesNoAcknowledgedCommit(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for round := 0; round < 3; round++ {
		cmd, out, stop := helper(t, "write", dir)
		last := -1
		want := 20 + 30*round
		for out.Scan() {
			var i int
			if _, err := fmt.Sscan(out.Text(), &i); err != nil {
				stop()
				t.Fatalf("helper: %q", out.Text())
			}
			last = i
			if i >= want {
				break
			}
		}
		cmd.Process.Kill() // SIGKILL mid-stream: later commits may or may not have landed
		stop()
		kv, err := Open(dir)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		v, err := kv.Get(ctx, []byte("last"))
		if err != nil {
			t.Fatal(err)
		}
		var stored int
		fmt.Sscan(string(v), &stored)
		if stored < last {
			t.Fatalf("round %d: acknowledged commit %d lost (stored %d)", round, last, stored)
		}
		for i := 0; i <= last; i++ {
			if _, err := kv.Get(ctx, fmt.Appendf(nil, "ack/%08d", i)); err != nil {
				t.Fatalf("round %d: acknowledged key %d: %v", round, i, err)
			}
		}
		// Clear for the next round so its numbering starts over.
		var b metastore.Batch
		kv.Scan(ctx, []byte("ack/"), nil, func(k, _ []byte) error { b.Delete(k); return nil })
		if err := kv.Commit(ctx, &b); err != nil {
			t.Fatal(err)
		}
		kv.Close()
	}
}

func writeSchema(t *testing.T, dir string, rec any) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{t.Logf}})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := json.Marshal(rec)
	if err := db.Set([]byte(schemaKey), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	writeSchema(t, dir, schemaRec{Format: schemaMagic, Schema: SchemaVersion + 1})
	_, err := Open(dir)
	if !errors.Is(err, metastore.ErrSchema) || !strings.Contains(err.Error(), "newer healstore") {
		t.Fatalf("newer schema: %v", err)
	}
	// The refused open released the lock and left the database usable.
	writeSchema(t, dir, schemaRec{Format: schemaMagic, Schema: SchemaVersion})
	kv, err := Open(dir)
	if err != nil {
		t.Fatalf("open after restoring the schema: %v", err)
	}
	kv.Close()
}

func TestForeignDatabaseRefused(t *testing.T) {
	t.Run("pebble without schema key", func(t *testing.T) {
		dir := t.TempDir()
		db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{t.Logf}})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Set([]byte("someone-else"), []byte("x"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err = Open(dir)
		if !errors.Is(err, metastore.ErrSchema) || !strings.Contains(err.Error(), "not healstore metadata") {
			t.Fatalf("foreign pebble database: %v", err)
		}
	})
	t.Run("other schema magic", func(t *testing.T) {
		dir := t.TempDir()
		writeSchema(t, dir, schemaRec{Format: "something-else", Schema: 1})
		if _, err := Open(dir); !errors.Is(err, metastore.ErrSchema) {
			t.Fatalf("foreign magic: %v", err)
		}
	})
	t.Run("directory of other files", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hi"), 0o600)
		_, err := Open(dir)
		if !errors.Is(err, metastore.ErrSchema) || !strings.Contains(err.Error(), "notes.txt") {
			t.Fatalf("directory with other files: %v", err)
		}
	})
}

func TestQuietLogger(t *testing.T) {
	// pebble's default logger writes WAL replay and flush messages through
	// the standard logger; Open must keep those quiet.
	var buf bytes.Buffer
	log.SetOutput(&buf)
	defer log.SetOutput(os.Stderr)
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		kv, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		var b metastore.Batch
		b.Put(fmt.Appendf(nil, "k%d", i), []byte("v"))
		if err := kv.Commit(context.Background(), &b); err != nil {
			t.Fatal(err)
		}
		kv.Close()
	}
	if buf.Len() != 0 {
		t.Fatalf("pebble logged during open/commit/close:\n%s", buf.String())
	}
	var errs []string
	l := quietLogger{func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }}
	l.Infof("replayed %d keys", 3)
	l.Errorf("background error: %s", "disk")
	if len(errs) != 1 || !strings.Contains(errs[0], "background error: disk") {
		t.Fatalf("error log %q", errs)
	}
}

func TestCommitLatency(t *testing.T) {
	// Not an assertion on speed: logs the synced commit latency the store
	// pays per object, for docs/metadata.md.
	kv := factory(t)
	ctx := context.Background()
	const n = 50
	start := time.Now()
	for i := 0; i < n; i++ {
		var b metastore.Batch
		b.ExpectMissing(fmt.Appendf(nil, "lat/%d", i))
		b.Put(fmt.Appendf(nil, "lat/%d", i), bytes.Repeat([]byte{'x'}, 2000))
		if err := kv.Commit(ctx, &b); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("synced conditional commit: %v each (%d commits)", time.Since(start)/n, n)
}

func BenchmarkPutObject1Stripe(b *testing.B)   { benchPut(b, 1) }
func BenchmarkPutObject64Stripes(b *testing.B) { benchPut(b, 64) }

func benchPut(b *testing.B, stripes int) {
	kv, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer kv.Close()
	metastoretest.BenchPutObject(b, kv, stripes, 10, 4)
}
