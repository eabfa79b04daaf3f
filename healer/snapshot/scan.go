package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healstore/healstore/metastore"
	etcdkv "github.com/healstore/healstore/metastore/etcd"
)

// How a view of the metastore was read (Manifest.Consistency).
const (
	// PointInTime: one consistent view (an etcd revision, or an engine
	// snapshot through PointInTimeScanner).
	PointInTime = "point-in-time"
	// Settled: two walks in a row read the same significant content, so
	// no commit touched it while the second walk ran (see spoolSettled).
	Settled = "settled"
)

// PointInTimeScanner is an optional KV ability: walk every key of one
// consistent view in ascending order (pebblekv has it). KVs without it
// are read by walking until two walks agree. It is looked for on the
// engine under every decorator (Unwrap), so a decorator such as
// CountingKV need not forward it; a view reads no decorator's state.
type PointInTimeScanner interface {
	ScanPointInTime(ctx context.Context, fn func(k, v []byte) error) error
}

// Unwrapper is implemented by KV decorators (CountingKV) so that the
// snapshotter reaches the engine underneath.
type Unwrapper interface {
	Unwrap() metastore.KV
}

// Unwrap follows Unwrap() down to the engine.
func Unwrap(kv metastore.KV) metastore.KV {
	for {
		u, ok := kv.(Unwrapper)
		if !ok {
			return kv
		}
		kv = u.Unwrap()
	}
}

// ChangeCounter is an optional KV ability: a number that grows with every
// commit, and the identity of the counter (two positions compare only under
// the same identity).
type ChangeCounter interface {
	ChangeCount(ctx context.Context) (position uint64, counter string, err error)
}

// Changes reads the KV's change counter: etcd's revision (every write of
// the cluster counts), or the nearest ChangeCounter decorator. ok is false
// when the KV cannot count its changes.
func Changes(ctx context.Context, kv metastore.KV) (position uint64, counter string, ok bool, err error) {
	if e, isEtcd := Unwrap(kv).(*etcdkv.KV); isEtcd {
		pos, counter, err := etcdRevision(ctx, e)
		return pos, counter, err == nil, err
	}
	for {
		if c, is := kv.(ChangeCounter); is {
			pos, counter, err := c.ChangeCount(ctx)
			return pos, counter, err == nil, err
		}
		u, is := kv.(Unwrapper)
		if !is {
			return 0, "", false, nil
		}
		kv = u.Unwrap()
	}
}

func etcdRevision(ctx context.Context, e *etcdkv.KV) (uint64, string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := e.Client().Get(cctx, e.Prefix()+"schema", clientv3.WithCountOnly())
	if err != nil {
		return 0, "", fmt.Errorf("%w: etcd revision: %v", metastore.ErrUnavailable, err)
	}
	return uint64(resp.Header.Revision), "etcd:" + strconv.FormatUint(resp.Header.ClusterId, 16), nil
}

// CountingKV counts the successful commits of the KV it wraps, so that a
// snapshotter in the same process knows how much changed since its last
// snapshot. The count lives in memory: a restart starts a new counter.
type CountingKV struct {
	metastore.KV
	id string
	n  atomic.Uint64
}

// CountCommits wraps kv. Wrap the store's KV once, where it is opened.
func CountCommits(kv metastore.KV) *CountingKV {
	var b [8]byte
	rand.Read(b[:])
	return &CountingKV{KV: kv, id: "process:" + hex.EncodeToString(b[:])}
}

// Commit implements metastore.KV and counts a successful commit.
func (c *CountingKV) Commit(ctx context.Context, b *metastore.Batch) error {
	err := c.KV.Commit(ctx, b)
	if err == nil && b.Len() > 0 {
		c.n.Add(1)
	}
	return err
}

// ChangeCount implements ChangeCounter.
func (c *CountingKV) ChangeCount(context.Context) (uint64, string, error) {
	return c.n.Load(), c.id, nil
}

// Unwrap implements Unwrapper.
func (c *CountingKV) Unwrap() metastore.KV { return c.KV }

var (
	_ ChangeCounter = (*CountingKV)(nil)
	_ Unwrapper     = (*CountingKV)(nil)
)

// spool is one view of the metastore written to a local file.
type spool struct {
	path        string
	hashes      Hashes
	records     int64
	size        int64
	taken       time.Time
	consistency string
	counter     string
	position    uint64
}

func (s *spool) remove() {
	if s != nil && s.path != "" {
		os.Remove(s.path)
	}
}

// maxSettle bounds the walks of a KV without point-in-time reads.
const maxSettle = 6

// ErrBusy: the metastore changed during every walk, so no consistent view
// was read; the snapshot is retried later.
var ErrBusy = errors.New("metastore kept changing while it was read")

// readView spools one consistent view of kv into a file in dir.
func readView(ctx context.Context, kv metastore.KV, dir string) (*spool, error) {
	engine := Unwrap(kv)
	if e, ok := engine.(*etcdkv.KV); ok {
		return spoolEtcd(ctx, e, dir)
	}
	if p, ok := engine.(PointInTimeScanner); ok {
		pos, counter, _, _ := Changes(ctx, kv)
		sp, err := spoolWith(dir, func(fn func(k, v []byte) error) error { return p.ScanPointInTime(ctx, fn) })
		if err != nil {
			return nil, err
		}
		sp.consistency, sp.counter, sp.position = PointInTime, counter, pos
		return sp, nil
	}
	return spoolSettled(ctx, kv, dir)
}

// spoolSettled walks kv until two walks in a row agree on the significant
// content (Hashes.Significant). Why that is a consistent view: a commit
// that landed while the second walk ran and that the walk saw only in part
// (some keys behind its cursor, some ahead) changed at least one key ahead
// of the cursor, which the first walk, finished before, read with its old
// value; so the two would differ. Commits entirely ahead of or behind the
// cursor leave a consistent view.
func spoolSettled(ctx context.Context, kv metastore.KV, dir string) (*spool, error) {
	var prev *spool
	defer func() { prev.remove() }()
	for attempt := 0; attempt < maxSettle; attempt++ {
		pos, counter, _, _ := Changes(ctx, kv)
		cur, err := spoolWith(dir, func(fn func(k, v []byte) error) error {
			return kv.Scan(ctx, nil, nil, fn)
		})
		if err != nil {
			return nil, err
		}
		cur.consistency, cur.counter, cur.position = Settled, counter, pos
		if prev != nil && prev.hashes.Significant == cur.hashes.Significant {
			return cur, nil
		}
		prev.remove()
		prev = cur
	}
	return nil, fmt.Errorf("%w (%d walks)", ErrBusy, maxSettle)
}

// spoolEtcd reads every key under the store's prefix at one revision.
func spoolEtcd(ctx context.Context, e *etcdkv.KV, dir string) (*spool, error) {
	data := e.Prefix() + "d/"
	end := clientv3.GetPrefixRangeEnd(data)
	var rev int64
	var clusterID uint64
	sp, err := spoolWith(dir, func(fn func(k, v []byte) error) error {
		from := data
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(256)}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			resp, err := e.Client().Get(cctx, from, opts...)
			cancel()
			if err != nil {
				return fmt.Errorf("%w: etcd snapshot read: %v", metastore.ErrUnavailable, err)
			}
			if rev == 0 {
				rev, clusterID = resp.Header.Revision, resp.Header.ClusterId
			}
			for _, kv := range resp.Kvs {
				if err := fn(kv.Key[len(data):], kv.Value); err != nil {
					return err
				}
			}
			if !resp.More || len(resp.Kvs) == 0 {
				return nil
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	})
	if err != nil {
		return nil, err
	}
	sp.consistency = PointInTime
	sp.counter, sp.position = "etcd:"+strconv.FormatUint(clusterID, 16), uint64(rev)
	return sp, nil
}

// spoolWith writes what walk yields to a new file in dir.
func spoolWith(dir string, walk func(fn func(k, v []byte) error) error) (sp *spool, err error) {
	f, err := os.CreateTemp(dir, "healstore-snapshot-*.spool")
	if err != nil {
		return nil, fmt.Errorf("snapshot spool: %w", err)
	}
	sp = &spool{path: f.Name(), taken: time.Now()}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("snapshot spool: %w", cerr)
		}
		if err != nil {
			sp.remove()
			sp = nil
		}
	}()
	sw, err := newStreamWriter(f)
	if err != nil {
		return nil, fmt.Errorf("snapshot spool: %w", err)
	}
	if err := walk(sw.put); err != nil {
		return nil, fmt.Errorf("read metastore: %w", err)
	}
	if sp.hashes, err = sw.finish(); err != nil {
		return nil, fmt.Errorf("snapshot spool: %w", err)
	}
	sp.records, sp.size = sw.records, sw.size
	return sp, nil
}
