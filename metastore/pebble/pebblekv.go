package pebblekv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log"
	"math/bits"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/healstore/healstore/metastore"
)

// SchemaVersion is the metadata schema this code writes and reads. A
// database with a higher version is refused with metastore.ErrSchema.
const SchemaVersion = 1

// schemaMagic names the database as healstore metadata in the schema key.
const schemaMagic = "healstore-metastore"

// Physical keys: user keys live under the byte 'd', the engine's own keys
// under 's', so nothing a caller writes can collide with the schema key
// and every user Scan stays inside 'd'.
const (
	dataPrefix = 'd'
	schemaKey  = "s:schema"
)

// scanPage bounds the entries one short-lived iterator reads before fn
// runs; an iterator held across a long walk would pin old files.
const scanPage = 256

type schemaRec struct {
	Format string `json:"format"`
	Schema int    `json:"schema"`
}

// Option configures Open.
type Option func(*options)

type options struct {
	logf func(format string, args ...any)
}

// WithErrorLog sets where pebble's error messages go (default: the
// standard logger). Informational messages are always dropped.
func WithErrorLog(logf func(format string, args ...any)) Option {
	return func(o *options) { o.logf = logf }
}

// quietLogger drops pebble's informational output (WAL replay, flushes,
// compactions) and keeps errors.
type quietLogger struct{ logf func(string, ...any) }

func (quietLogger) Infof(string, ...any) {}
func (l quietLogger) Errorf(format string, args ...any) {
	l.logf("healstore metadata (pebble): "+format, args...)
}

// Fatalf must not return (pebble's contract): the database hit a state it
// cannot continue from.
func (l quietLogger) Fatalf(format string, args ...any) {
	l.logf("healstore metadata (pebble) fatal: "+format, args...)
	panic(fmt.Sprintf("healstore metadata (pebble) fatal: "+format, args...))
}

// KV is a metastore.KV on a pebble database. Safe for concurrent use.
type KV struct {
	dir string
	// mu guards closed against the use of db: every call holds it shared,
	// Close holds it exclusively, so Close never pulls the database from
	// under a running call.
	mu     sync.RWMutex
	closed bool
	db     *pebble.DB
	lock   *pebble.Lock
	// keyLocks make checking a batch's conditions and applying it one
	// atomic step: a commit holds the locks of every key its batch names
	// (keyStripe) from the first condition check until its write is
	// synced. Commits on disjoint keys run at once, and pebble then
	// covers their writes with one WAL sync. See lockKeys.
	keyLocks [commitStripes]sync.Mutex
	seed     maphash.Seed
	// serialCommits makes every commit take serialMu instead: the one
	// global commit lock healstore had before keyLocks, kept so a
	// benchmark can compare both in one run. Set only by tests.
	serialCommits bool
	serialMu      sync.Mutex
	// checkedHook, when set (by tests only), runs between a commit's
	// condition checks and its write: it widens the window a missing lock
	// would leave open, so a test of the locks can catch one.
	checkedHook func()
	// snaps holds the engine snapshots of running ScanPointInTime calls,
	// so Close can release them (pebble refuses to close a database with
	// open snapshots). Guarded by snapMu.
	snapMu sync.Mutex
	snaps  map[*pebble.Snapshot]struct{}
}

var _ metastore.KV = (*KV)(nil)

// pebbleFile matches the names pebble itself creates in its directory.
var pebbleFile = regexp.MustCompile(`^(LOCK|CURRENT|OPTIONS-\d+|MANIFEST-\d+|marker\..*|\d+\.(log|sst|blob)|.*\.dbtmp|archive)$`)

// Open opens (creating if needed) the metadata database in dir.
//
// Errors: metastore.ErrLocked when another process (or another Open in
// this one) holds dir; metastore.ErrSchema when dir holds a database of a
// newer healstore, a pebble database that is not healstore metadata, or
// files that are not a database at all.
func Open(dir string, opts ...Option) (*KV, error) {
	o := options{logf: log.Printf}
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("metadata directory %s: %w", dir, err)
	}
	desc, err := pebble.Peek(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("metadata directory %s: %w", dir, err)
	}
	if !desc.Exists {
		if err := checkEmpty(dir); err != nil {
			return nil, err
		}
	}
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) || strings.Contains(err.Error(), "lock held") {
			return nil, fmt.Errorf("%w: metadata directory %s is in use by another healstore process (%v)", metastore.ErrLocked, dir, err)
		}
		return nil, fmt.Errorf("lock metadata directory %s: %w", dir, err)
	}
	db, err := pebble.Open(dir, &pebble.Options{Lock: lock, Logger: quietLogger{o.logf}})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open metadata directory %s: %w", dir, err)
	}
	kv := &KV{dir: dir, db: db, lock: lock, seed: maphash.MakeSeed()}
	if err := kv.checkSchema(); err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}
	return kv, nil
}

// checkEmpty refuses a directory that holds no database but other files:
// healstore would otherwise scatter its database among them.
func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("metadata directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if !pebbleFile.MatchString(e.Name()) {
			return fmt.Errorf("%w: metadata directory %s holds no healstore database but other files (%s); use an empty or new directory",
				metastore.ErrSchema, dir, e.Name())
		}
	}
	return nil
}

// checkSchema reads the schema key, writing it into a new, empty database.
func (k *KV) checkSchema() error {
	v, closer, err := k.db.Get([]byte(schemaKey))
	if err == nil {
		raw := bytes.Clone(v)
		closer.Close()
		var rec schemaRec
		if json.Unmarshal(raw, &rec) != nil || rec.Format != schemaMagic {
			return fmt.Errorf("%w: metadata directory %s holds a database that is not healstore metadata", metastore.ErrSchema, k.dir)
		}
		if rec.Schema > SchemaVersion {
			return fmt.Errorf("%w: metadata directory %s was written by a newer healstore (schema %d; this one reads up to %d); upgrade healstore",
				metastore.ErrSchema, k.dir, rec.Schema, SchemaVersion)
		}
		if rec.Schema < 1 {
			return fmt.Errorf("%w: metadata directory %s: invalid schema version %d", metastore.ErrSchema, k.dir, rec.Schema)
		}
		return nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("metadata directory %s: read schema: %w", k.dir, err)
	}
	// No schema key: a database that holds anything at all is someone
	// else's; an empty one is new (or its creation was interrupted).
	it, err := k.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("metadata directory %s: %w", k.dir, err)
	}
	nonEmpty := it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("metadata directory %s: %w", k.dir, err)
	}
	if nonEmpty {
		return fmt.Errorf("%w: metadata directory %s holds a pebble database that is not healstore metadata (no schema key)", metastore.ErrSchema, k.dir)
	}
	// Written outside Commit and without keyLocks: Open runs this before
	// it hands out the KV, and no user key maps onto the schema key.
	rec, _ := json.Marshal(schemaRec{Format: schemaMagic, Schema: SchemaVersion})
	if err := k.db.Set([]byte(schemaKey), rec, pebble.Sync); err != nil {
		return fmt.Errorf("metadata directory %s: write schema: %w", k.dir, err)
	}
	return nil
}

// Dir is the database directory.
func (k *KV) Dir() string { return k.dir }

func dataKey(key []byte) []byte {
	out := make([]byte, 1+len(key))
	out[0] = dataPrefix
	copy(out[1:], key)
	return out
}

func (k *KV) enter(ctx context.Context) error {
	k.mu.RLock()
	if k.closed {
		k.mu.RUnlock()
		return fmt.Errorf("metadata %s: %w", k.dir, metastore.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		k.mu.RUnlock()
		return err
	}
	return nil
}

// Get implements metastore.KV.
func (k *KV) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := k.enter(ctx); err != nil {
		return nil, err
	}
	defer k.mu.RUnlock()
	return k.get(key)
}

func (k *KV) get(key []byte) ([]byte, error) {
	v, closer, err := k.db.Get(dataKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("key %q: %w", key, metastore.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("metadata %s: get %q: %w", k.dir, key, err)
	}
	out := append([]byte{}, v...)
	closer.Close()
	return out, nil
}

// Scan implements metastore.KV.
func (k *KV) Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	lower := dataKey(metastore.ScanStart(prefix, start))
	var upper []byte
	if end := metastore.PrefixEnd(prefix); end != nil {
		upper = dataKey(end)
	} else {
		upper = []byte{dataPrefix + 1}
	}
	return k.walk(ctx, nil, lower, upper, fn)
}

// ScanPointInTime calls fn for every key and value of one consistent view
// of the database, in ascending key order: commits that land during the
// walk are not seen, and no commit is seen in part. It is what Scan(ctx,
// nil, nil, fn) would return if no commit happened meanwhile, and it is
// how the metadata snapshotter (healer/snapshot.PointInTimeScanner) reads
// a database under constant writes. fn may call any KV method. When fn
// returns metastore.ErrStop the walk ends with nil.
//
// The view is a pebble snapshot, read in pages with short-lived iterators
// as Scan is; it keeps the versions it needs from compaction until the
// walk ends. A Close during the walk ends it with ErrClosed.
func (k *KV) ScanPointInTime(ctx context.Context, fn func(k, v []byte) error) error {
	snap, err := k.openSnapshot(ctx)
	if err != nil {
		return err
	}
	defer k.releaseSnapshot(snap)
	return k.walk(ctx, snap, []byte{dataPrefix}, []byte{dataPrefix + 1}, fn)
}

// openSnapshot takes an engine snapshot and registers it for Close.
func (k *KV) openSnapshot(ctx context.Context) (*pebble.Snapshot, error) {
	if err := k.enter(ctx); err != nil {
		return nil, err
	}
	defer k.mu.RUnlock()
	snap := k.db.NewSnapshot()
	k.snapMu.Lock()
	if k.snaps == nil {
		k.snaps = map[*pebble.Snapshot]struct{}{}
	}
	k.snaps[snap] = struct{}{}
	k.snapMu.Unlock()
	return snap, nil
}

// releaseSnapshot closes snap unless Close already did. Both run under
// snapMu, and Close releases every snapshot before it closes the database,
// so a snapshot is closed exactly once and always on an open database.
func (k *KV) releaseSnapshot(snap *pebble.Snapshot) {
	k.snapMu.Lock()
	defer k.snapMu.Unlock()
	if _, open := k.snaps[snap]; !open {
		return
	}
	delete(k.snaps, snap)
	// pebble's Snapshot.Close returns no error of its own.
	snap.Close()
}

// walk calls fn for the entries in [lower, upper) of r (the database when
// r is nil), a page at a time, so no iterator stays open while fn runs.
func (k *KV) walk(ctx context.Context, r pebble.Reader, lower, upper []byte, fn func(k, v []byte) error) error {
	for {
		page, err := k.page(ctx, r, lower, upper)
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e[0], e[1]); err != nil {
				if errors.Is(err, metastore.ErrStop) {
					return nil
				}
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		lower = append(dataKey(page[len(page)-1][0]), 0)
	}
}

// page reads up to scanPage entries in [lower, upper) of r (the database
// when r is nil) with a fresh iterator, returning user keys and values as
// copies.
func (k *KV) page(ctx context.Context, r pebble.Reader, lower, upper []byte) ([][2][]byte, error) {
	if err := k.enter(ctx); err != nil {
		return nil, err
	}
	defer k.mu.RUnlock()
	if r == nil {
		r = k.db
	}
	it, err := r.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("metadata %s: scan: %w", k.dir, err)
	}
	var page [][2][]byte
	for ok := it.First(); ok && len(page) < scanPage; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("metadata %s: scan: %w", k.dir, err)
		}
		page = append(page, [2][]byte{bytes.Clone(it.Key()[1:]), append([]byte{}, v...)})
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("metadata %s: scan: %w", k.dir, err)
	}
	return page, nil
}

// commitStripes is how many locks the keys of commits map onto. Two
// commits on different keys share a lock by chance with odds 1/512 per
// key pair: rare enough that concurrent commits (rebuild workers, upload
// workers) seldom wait on each other, small enough to cost nothing.
const commitStripes = 512

// stripeSet is a set of keyLocks indexes, one bit each.
type stripeSet [commitStripes / 64]uint64

func (k *KV) keyStripe(key []byte) int {
	return int(maphash.Bytes(k.seed, key) % commitStripes)
}

// lockKeys locks the keyLocks of every key b names, in its conditions
// and its writes, and returns them for unlockKeys. Locks are taken once
// each and in ascending index order, so two commits never wait on each
// other in a cycle.
//
// Holding a key's lock through the synced write is what keeps Commit
// exact, and it must be held that long because pebble makes a synced
// batch visible to readers before its WAL sync, not after:
// commitPipeline.publish (pebble/v2 commit.go) ratchets visibleSeqNum as
// soon as the batch and every earlier one are in the memtable, and only
// then waits on the batch's sync; DB.ApplyNoSyncWait's comment (db.go)
// says it outright: "a mutation is visible before the WAL sync even in
// the wait case". So:
//   - A condition reads only keys whose locks its commit holds, and every
//     writer of those keys holds the same locks until its sync returned:
//     no condition ever sees a value that is not yet durable, as with the
//     one global lock before.
//   - A batch is written to the WAL before it becomes visible
//     (commitPipeline.prepare writes it under commitPipeline.mu), the WAL
//     is one sequential log, and its flusher (record.LogWriter.flushLoop)
//     syncs everything written before a sync request. A commit that starts
//     after another's writes became visible therefore lies after it in the
//     WAL, and its own sync makes both durable: no acknowledged commit can
//     rest on one a crash then loses.
//   - Get and Scan never took the commit lock, so they could always see a
//     commit during its sync, and still can; this does not widen that.
//     What a caller does outside the metastore on the strength of a
//     commit (deleting a replaced shard, invariant 2) follows its own
//     acknowledged Commit.
func (k *KV) lockKeys(b *metastore.Batch) stripeSet {
	var set stripeSet
	if k.serialCommits {
		k.serialMu.Lock()
		return set
	}
	for _, c := range b.Conds() {
		i := k.keyStripe(c.Key)
		set[i/64] |= 1 << (i % 64)
	}
	for _, op := range b.Ops() {
		i := k.keyStripe(op.Key)
		set[i/64] |= 1 << (i % 64)
	}
	for w, word := range set {
		for word != 0 {
			bit := bits.TrailingZeros64(word)
			word &^= 1 << bit
			k.keyLocks[w*64+bit].Lock()
		}
	}
	return set
}

// unlockKeys releases the locks lockKeys took.
func (k *KV) unlockKeys(set stripeSet) {
	if k.serialCommits {
		k.serialMu.Unlock()
		return
	}
	for w, word := range set {
		for word != 0 {
			bit := bits.TrailingZeros64(word)
			word &^= 1 << bit
			k.keyLocks[w*64+bit].Unlock()
		}
	}
}

// Commit implements metastore.KV: conditions and writes under the locks
// of the keys the batch names, the write synced to disk before return.
func (k *KV) Commit(ctx context.Context, b *metastore.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if err := k.enter(ctx); err != nil {
		return err
	}
	defer k.mu.RUnlock()
	defer k.unlockKeys(k.lockKeys(b))
	for _, c := range b.Conds() {
		v, err := k.get(c.Key)
		found := err == nil
		if err != nil && !errors.Is(err, metastore.ErrNotFound) {
			return err
		}
		if c.Missing && found {
			return fmt.Errorf("key %q exists: %w", c.Key, metastore.ErrConflict)
		}
		if !c.Missing && (!found || !bytes.Equal(v, c.Value)) {
			return fmt.Errorf("key %q changed: %w", c.Key, metastore.ErrConflict)
		}
	}
	if k.checkedHook != nil {
		k.checkedHook()
	}
	if b.Len() == 0 {
		return nil
	}
	pb := k.db.NewBatch()
	defer pb.Close()
	for _, op := range b.Ops() {
		var err error
		if op.Delete {
			err = pb.Delete(dataKey(op.Key), nil)
		} else {
			err = pb.Set(dataKey(op.Key), op.Value, nil)
		}
		if err != nil {
			return fmt.Errorf("metadata %s: batch: %w", k.dir, err)
		}
	}
	if err := pb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("metadata %s: commit: %w", k.dir, err)
	}
	return nil
}

// Close implements metastore.KV. It waits for running calls, then closes
// the database and releases the directory lock.
func (k *KV) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("metadata %s: %w", k.dir, metastore.ErrClosed)
	}
	k.closed = true
	// Walks between pages hold no lock; their snapshots are released
	// here, and their next page finds the KV closed.
	k.snapMu.Lock()
	for snap := range k.snaps {
		snap.Close()
	}
	k.snaps = nil
	k.snapMu.Unlock()
	err := k.db.Close()
	if lerr := k.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("close metadata %s: %w", k.dir, err)
	}
	return nil
}
