package fuse

import (
	"container/list"
	"sync"
)

// readCache keeps recently fetched or uploaded blocks in memory, bounded
// in bytes, least recently used out first. The kernel page cache sits in
// front of it; this cache serves the many small kernel reads that fall in
// one block and holds read-ahead until it is asked for. Entries are the
// exact stored content of a block (possibly shorter than the block size).
type readCache struct {
	mu    sync.Mutex
	limit int64
	used  int64
	ll    *list.List // front = most recent; values are *rcEntry
	m     map[blockKey]*list.Element
}

type rcEntry struct {
	key  blockKey
	data []byte
}

// rcEntryCost is the least an entry costs (about its list element, entry
// and map slot). It bounds the number of entries: a hole is cached as an
// empty entry, and reading a large sparse file would otherwise add entries
// that cost nothing, without limit. Blocks of more bytes cost their bytes,
// so the cache holds as many of them as its size says.
const rcEntryCost = 256

func entryCost(data []byte) int64 { return max(int64(cap(data)), rcEntryCost) }

func newReadCache(limit int64) *readCache {
	return &readCache{limit: limit, ll: list.New(), m: map[blockKey]*list.Element{}}
}

// get returns the cached block; the slice must not be modified.
func (c *readCache) get(k blockKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*rcEntry).data, true
}

// put stores data (which the cache now owns) under k.
func (c *readCache) put(k blockKey, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.used -= entryCost(e.Value.(*rcEntry).data)
		c.ll.Remove(e)
		delete(c.m, k)
	}
	size := entryCost(data)
	if size > c.limit {
		return
	}
	c.m[k] = c.ll.PushFront(&rcEntry{key: k, data: data})
	c.used += size
	for c.used > c.limit {
		back := c.ll.Back()
		ent := back.Value.(*rcEntry)
		c.ll.Remove(back)
		delete(c.m, ent.key)
		c.used -= entryCost(ent.data)
	}
}

// drop forgets k.
func (c *readCache) drop(k blockKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.used -= entryCost(e.Value.(*rcEntry).data)
		c.ll.Remove(e)
		delete(c.m, k)
	}
}

// dropFrom forgets every block of ino at index >= from.
func (c *readCache) dropFrom(ino, from uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if k.ino == ino && k.idx >= from {
			c.used -= entryCost(e.Value.(*rcEntry).data)
			c.ll.Remove(e)
			delete(c.m, k)
		}
	}
}

func (c *readCache) has(k blockKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[k]
	return ok
}
