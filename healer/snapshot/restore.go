package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

// Opener gives the backend called name, or ok=false when it cannot be
// reached.
type Opener func(ctx context.Context, name string) (b backends.Backend, ok bool)

// Read decodes snapshot m from the backends and calls fn with each record
// in order. Every shard is verified against the checksum in m, every block
// against its seal, and the whole stream against m's SHA-256 and record
// count; a snapshot that fails any of these is reported with ErrCorrupt
// (or encoder.ErrTooFewShards / encoder.ErrAuth inside it) after fn may
// already have seen some records, so callers apply them somewhere they can
// throw away.
func Read(ctx context.Context, keys *Keys, m *Manifest, open Opener, fn func(Record) error) (records int64, err error) {
	if len(m.Stripes) == 0 {
		return 0, fmt.Errorf("%w: snapshot %s has no stripes", ErrCorrupt, m.ID)
	}
	codec, err := encoder.NewCodec(m.Policy, keys.codec)
	if err != nil {
		return 0, fmt.Errorf("%w: snapshot %s: policy: %v", ErrCorrupt, m.ID, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	// fetchErr is set before the pipe closes with it, so a reader error
	// caused by it reports the fetch failure itself. Atomic: the reader
	// may fail on its own (a malformed stream) while a fetch fails too.
	var fetchErr atomic.Pointer[error]
	go func() {
		for i := range m.Stripes {
			data, err := fetchBlock(ctx, codec, m, i, open)
			if err != nil {
				fetchErr.Store(&err)
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(data); err != nil {
				return
			}
		}
		pw.Close()
	}()
	defer pr.CloseWithError(errors.New("snapshot read ended"))
	streamErr := func(err error) error {
		if ferr := fetchErr.Load(); ferr != nil {
			return *ferr
		}
		return fmt.Errorf("snapshot %s: %w", m.ID, err)
	}
	sr, err := newStreamReader(pr)
	if err != nil {
		return 0, streamErr(err)
	}
	for {
		rec, err := sr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sr.records, streamErr(err)
		}
		if err := fn(rec); err != nil {
			return sr.records, err
		}
	}
	if sr.records != m.Records {
		return sr.records, fmt.Errorf("%w: snapshot %s holds %d records, its pointer says %d", ErrCorrupt, m.ID, sr.records, m.Records)
	}
	if got := sr.sum(); got != m.Hashes.Full {
		return sr.records, fmt.Errorf("%w: snapshot %s: SHA-256 %s, its pointer says %s", ErrCorrupt, m.ID, got, m.Hashes.Full)
	}
	return sr.records, nil
}

// fetchBlock reads every shard of stripe i in parallel and decodes it.
func fetchBlock(ctx context.Context, codec *encoder.Codec, m *Manifest, i int, open Opener) ([]byte, error) {
	ref := m.Stripes[i]
	n := m.Policy.K + m.Policy.M
	if len(ref.Shards) != n {
		return nil, fmt.Errorf("%w: snapshot %s stripe %d lists %d shards, its policy %d", ErrCorrupt, m.ID, i, len(ref.Shards), n)
	}
	shards := make([][]byte, n)
	sums := make([][]byte, n)
	var wg sync.WaitGroup
	for j, sh := range ref.Shards {
		sums[j] = sh.Sum
		if sh.Backend == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, ok := open(ctx, sh.Backend)
			if !ok {
				return
			}
			if v, err := b.Get(ctx, sh.Key); err == nil {
				shards[j] = v
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := codec.DecodeBlock(m.ID, uint64(i), ref.ID, shards, sums)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot %s stripe %d: %w", ErrCorrupt, m.ID, i, err)
	}
	if len(data) != ref.DataLen {
		return nil, fmt.Errorf("%w: snapshot %s stripe %d decodes to %d bytes, its pointer says %d", ErrCorrupt, m.ID, i, len(data), ref.DataLen)
	}
	return data, nil
}

// restoreBatch bounds one commit of a restore (etcd's default
// --max-txn-ops is 128; the records are applied into a fresh metastore,
// so splitting them is harmless).
const (
	restoreBatchOps   = 100
	restoreBatchBytes = 1 << 20
)

// Restore reads snapshot m (as Read) into dst, which should be empty: the
// records are committed in batches as they arrive, so a failure leaves dst
// partly written and the caller must discard it.
func Restore(ctx context.Context, keys *Keys, m *Manifest, open Opener, dst metastore.KV) (int64, error) {
	var b metastore.Batch
	size := 0
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		if err := dst.Commit(ctx, &b); err != nil {
			return fmt.Errorf("restore snapshot %s: %w", m.ID, err)
		}
		b, size = metastore.Batch{}, 0
		return nil
	}
	n, err := Read(ctx, keys, m, open, func(r Record) error {
		b.Put(r.Key, r.Value)
		size += len(r.Key) + len(r.Value)
		if b.Len() >= restoreBatchOps || size >= restoreBatchBytes {
			return flush()
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	return n, flush()
}
