package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// memKV is an in-memory kvStore for tests of the core.
type memKV struct {
	mu      sync.Mutex
	m       map[string][]byte
	commits atomic.Int64
}

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (k *memKV) Get(ctx context.Context, key []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[string(key)]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", key, errNoKey)
	}
	return bytes.Clone(v), nil
}

func (k *memKV) Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	k.mu.Lock()
	var keys []string
	for key := range k.m {
		if strings.HasPrefix(key, string(prefix)) && key >= string(start) {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	vals := make([][]byte, len(keys))
	for i, key := range keys {
		vals[i] = bytes.Clone(k.m[key])
	}
	k.mu.Unlock()
	for i, key := range keys {
		if err := fn([]byte(key), vals[i]); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (k *memKV) Commit(ctx context.Context, b *kvBatch) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range b.conds {
		v, ok := k.m[string(c.key)]
		if c.missing == ok || (!c.missing && !bytes.Equal(v, c.value)) {
			return fmt.Errorf("condition on %q: %w", c.key, errConflict)
		}
	}
	for _, op := range b.ops {
		if op.del {
			delete(k.m, string(op.key))
		} else {
			k.m[string(op.key)] = bytes.Clone(op.value)
		}
	}
	k.commits.Add(1)
	return nil
}

// memBlobs is an in-memory blobStore with fault injection.
type memBlobs struct {
	mu      sync.Mutex
	m       map[string][]byte
	puts    atomic.Int64
	gets    atomic.Int64
	putErr  atomic.Pointer[error]
	getErr  atomic.Pointer[error]
	stuck   atomic.Bool   // calls block until ctx ends
	putWait chan struct{} // when set, each Put waits for a token
	// putHook, when set, runs at the start of each Put, before it reads
	// the block.
	putHook atomic.Pointer[func(name string)]
	// getHook, when set, runs at the start of each Get.
	getHook atomic.Pointer[func(name string)]
	// gotHook, when set, runs in each Get after it copied the stored
	// bytes, before it returns them.
	gotHook atomic.Pointer[func(name string)]
}

func newMemBlobs() *memBlobs { return &memBlobs{m: map[string][]byte{}} }

func (b *memBlobs) fault(ctx context.Context, p *atomic.Pointer[error]) error {
	if b.stuck.Load() {
		<-ctx.Done()
		return fmt.Errorf("stuck backend: %w", ctx.Err())
	}
	if e := p.Load(); e != nil {
		return *e
	}
	return nil
}

func (b *memBlobs) PutBlock(ctx context.Context, name string, r io.Reader) error {
	if h := b.putHook.Load(); h != nil {
		(*h)(name)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if b.putWait != nil {
		select {
		case <-b.putWait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := b.fault(ctx, &b.putErr); err != nil {
		return err
	}
	b.mu.Lock()
	b.m[name] = bytes.Clone(data)
	b.mu.Unlock()
	b.puts.Add(1)
	return nil
}

func (b *memBlobs) GetBlock(ctx context.Context, name string, max int) ([]byte, error) {
	if h := b.getHook.Load(); h != nil {
		(*h)(name)
	}
	if err := b.fault(ctx, &b.getErr); err != nil {
		return nil, err
	}
	b.gets.Add(1)
	b.mu.Lock()
	v, ok := b.m[name]
	if !ok {
		b.mu.Unlock()
		return nil, errNoBlock
	}
	if len(v) > max {
		b.mu.Unlock()
		return nil, fmt.Errorf("object %s: %d bytes > block %d", name, len(v), max)
	}
	out := bytes.Clone(v)
	b.mu.Unlock()
	if h := b.gotHook.Load(); h != nil {
		(*h)(name)
	}
	return out, nil
}

func (b *memBlobs) DeleteBlock(ctx context.Context, name string) error {
	if err := b.fault(ctx, &b.putErr); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.m, name)
	b.mu.Unlock()
	return nil
}

func (b *memBlobs) ListBlocks(ctx context.Context, prefix, after string, fn func(string) error) error {
	b.mu.Lock()
	var names []string
	for n := range b.m {
		if strings.HasPrefix(n, prefix) && n > after {
			names = append(names, n)
		}
	}
	b.mu.Unlock()
	slices.Sort(names)
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

func (b *memBlobs) Capacity(ctx context.Context) (capacity, error) {
	return capacity{Known: true, Total: 10 << 30, Free: 8 << 30}, nil
}

func (b *memBlobs) names(prefix string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for n := range b.m {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (b *memBlobs) get(name string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[name]
	return v, ok
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}
