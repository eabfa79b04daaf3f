package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/encoder"
)

// Pointer is what every backend holds under PointerKey: the snapshots
// kept, newest first, and the specs of the backends their shards live on.
type Pointer struct {
	Format  int       `json:"format"`
	StoreID string    `json:"store_id"`
	Written time.Time `json:"written"`
	// Backends are the specs (secret refs only) of the backends holding a
	// shard of a listed snapshot, so that recovery starting from one
	// backend finds the others.
	Backends  []backends.Spec `json:"backends"`
	Snapshots []Manifest      `json:"snapshots"`
}

const pointerFormat = 1

// Manifest describes one snapshot: where its shards are and how to check
// what they decode to.
type Manifest struct {
	ID  encoder.ObjectID `json:"id"`
	Seq uint64           `json:"seq"`
	// Taken is when the metastore view was read.
	Taken time.Time `json:"taken"`
	// Consistency says how the view was read: "point-in-time" (an etcd
	// revision or an engine snapshot) or "settled" (two identical walks).
	Consistency string `json:"consistency"`
	// Counter and Position locate the view in the metastore's change
	// count ("etcd:<cluster id>" and the revision, or a process-local
	// commit counter); Position is meaningless under another Counter.
	Counter  string `json:"counter,omitempty"`
	Position uint64 `json:"position,omitempty"`
	Records  int64  `json:"records"`
	Size     int64  `json:"size"`
	Hashes   Hashes `json:"hashes"`
	// Policy the stream was sealed and coded with.
	Policy  encoder.Policy `json:"policy"`
	Stripes []StripeRef    `json:"stripes"`
	// Settings are the store's settings (policy, placement, healer) as
	// the store encodes them, for recovery to write a config from.
	Settings json.RawMessage `json:"settings,omitempty"`
}

// StripeRef is one stripe of a snapshot.
type StripeRef struct {
	ID      encoder.StripeID `json:"id"`
	DataLen int              `json:"data_len"`
	Shards  []ShardRef       `json:"shards"` // index = shard index
}

// ShardRef is where one shard went; Backend "" means it did not land.
type ShardRef struct {
	Backend string `json:"backend,omitempty"`
	Key     string `json:"key,omitempty"`
	Sum     []byte `json:"sum,omitempty"`
}

// newer orders manifests newest first. One sequence number can be taken
// twice across a leader handover (the old leader still uploading while
// the new one starts); then, under one change counter, the later position
// holds every commit the other holds, whatever the two clocks said.
func newer(a, b *Manifest) bool {
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	if a.Counter != "" && a.Counter == b.Counter && a.Position != b.Position {
		return a.Position > b.Position
	}
	if !a.Taken.Equal(b.Taken) {
		return a.Taken.After(b.Taken)
	}
	return bytes.Compare(a.ID[:], b.ID[:]) > 0
}

// Sealed pointer layout:
//
//	magic "HEALSPTR" 0x01 | key check (8) | nonce (12) | AES-256-GCM(JSON)
//
// The associated data is everything before the ciphertext, so the key
// check cannot be altered either.
const pointerMagic = "HEALSPTR\x01"

const pointerHeader = len(pointerMagic) + 8 + 12

// ErrWrongKey: the pointers were sealed under another master key.
var ErrWrongKey = errors.New("snapshot pointer sealed with a different master key")

// ErrNoPointer: no backend holds a pointer.
var ErrNoPointer = errors.New("no snapshot pointer found")

// Seal encrypts and authenticates a pointer.
func (k *Keys) Seal(p *Pointer) ([]byte, error) {
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("snapshot pointer: %w", err)
	}
	out := make([]byte, pointerHeader, pointerHeader+len(plain)+k.pointer.Overhead())
	copy(out, pointerMagic)
	copy(out[len(pointerMagic):], k.check[:])
	nonce := out[len(pointerMagic)+8 : pointerHeader]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("snapshot pointer nonce: %w", err)
	}
	return k.pointer.Seal(out, nonce, plain, out[:pointerHeader]), nil
}

// Open checks and decrypts a sealed pointer. Errors: ErrWrongKey when its
// key check names another master key; ErrCorrupt when it is damaged or
// forged.
func (k *Keys) Open(b []byte) (*Pointer, error) {
	if len(b) < pointerHeader+k.pointer.Overhead() || string(b[:len(pointerMagic)]) != pointerMagic {
		return nil, fmt.Errorf("%w: not a healstore snapshot pointer (or a newer format)", ErrCorrupt)
	}
	if !bytes.Equal(b[len(pointerMagic):len(pointerMagic)+8], k.check[:]) {
		return nil, fmt.Errorf("%w (key check %s, this key's is %s)", ErrWrongKey,
			hex.EncodeToString(b[len(pointerMagic):len(pointerMagic)+8]), k.KeyCheck())
	}
	nonce := b[len(pointerMagic)+8 : pointerHeader]
	plain, err := k.pointer.Open(nil, nonce, b[pointerHeader:], b[:pointerHeader])
	if err != nil {
		return nil, fmt.Errorf("%w: pointer does not authenticate (damaged or forged)", ErrCorrupt)
	}
	var p Pointer
	if err := json.Unmarshal(plain, &p); err != nil {
		return nil, fmt.Errorf("%w: pointer: %v", ErrCorrupt, err)
	}
	if p.Format != pointerFormat {
		return nil, fmt.Errorf("%w: pointer format %d, this healstore reads %d", ErrCorrupt, p.Format, pointerFormat)
	}
	return &p, nil
}

// PointerRead is the outcome of reading one backend's pointer.
type PointerRead struct {
	Backend string
	Pointer *Pointer // nil on error
	Err     error    // backends.ErrNotFound when the backend has none
}

// ReadPointers reads and opens the pointer of every backend in parallel.
func ReadPointers(ctx context.Context, keys *Keys, bs []backends.Backend) []PointerRead {
	out := make([]PointerRead, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Backend = b.Name()
			raw, err := b.Get(ctx, PointerKey)
			if err != nil {
				out[i].Err = err
				return
			}
			out[i].Pointer, out[i].Err = keys.Open(raw)
		}()
	}
	wg.Wait()
	return out
}

// Catalog is the union of what a set of pointers says: every snapshot
// any of them lists (newest first, each once) and every backend spec.
type Catalog struct {
	StoreID   string
	Snapshots []Manifest
	Specs     map[string]backends.Spec
	// Read counts pointers opened; Missing the backends without one;
	// WrongKey those sealed under another key; Corrupt the damaged ones.
	Read, Missing, WrongKey, Corrupt int
	// Failed names each backend whose pointer could not be read and why.
	Failed map[string]error
}

// Merge builds a Catalog from pointer reads. Pointers of another store
// than the majority's are ignored (and counted corrupt). For a spec named
// by several pointers the newest pointer's wins.
func Merge(reads []PointerRead) *Catalog {
	c := &Catalog{Specs: map[string]backends.Spec{}, Failed: map[string]error{}}
	votes := map[string]int{}
	for _, r := range reads {
		if r.Pointer != nil {
			votes[r.Pointer.StoreID]++
		}
	}
	for id, n := range votes {
		if n > votes[c.StoreID] || (n == votes[c.StoreID] && id < c.StoreID) {
			c.StoreID = id
		}
	}
	var ptrs []*Pointer
	for _, r := range reads {
		switch {
		case r.Pointer != nil && r.Pointer.StoreID == c.StoreID:
			c.Read++
			ptrs = append(ptrs, r.Pointer)
		case r.Pointer != nil:
			c.Corrupt++
			c.Failed[r.Backend] = fmt.Errorf("pointer of another store (%s)", r.Pointer.StoreID)
		case errors.Is(r.Err, backends.ErrNotFound):
			c.Missing++
		case errors.Is(r.Err, ErrWrongKey):
			c.WrongKey++
			c.Failed[r.Backend] = r.Err
		default:
			if errors.Is(r.Err, ErrCorrupt) {
				c.Corrupt++
			}
			c.Failed[r.Backend] = r.Err
		}
	}
	sort.Slice(ptrs, func(i, j int) bool { return ptrs[i].Written.Before(ptrs[j].Written) })
	seen := map[encoder.ObjectID]bool{}
	for i := len(ptrs) - 1; i >= 0; i-- {
		for _, m := range ptrs[i].Snapshots {
			if !seen[m.ID] {
				seen[m.ID] = true
				c.Snapshots = append(c.Snapshots, m)
			}
		}
	}
	for _, p := range ptrs { // oldest first: newer specs overwrite
		for _, s := range p.Backends {
			c.Specs[s.Name] = s
		}
	}
	sort.Slice(c.Snapshots, func(i, j int) bool { return newer(&c.Snapshots[i], &c.Snapshots[j]) })
	return c
}
