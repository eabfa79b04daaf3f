package zdb

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/healstore/healstore/backends"
)

// MaxValueSize is 0-db's largest argument, 8 MiB. A larger one makes the
// server drop the connection, so Put refuses it before sending.
const MaxValueSize = 8 << 20

// castagnoli is the CRC32 0-db keeps per value (the SSE4.2 crc32
// instruction's polynomial) and compares to call a SET unchanged.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Pool and dial settings.
const (
	// PoolSize is the most connections one backend opens to its server;
	// more concurrent calls wait for a free one (within their ctx).
	PoolSize = 16
	// idleTimeout drops connections idle that long: 0-db never does, but
	// NATs and firewalls between here and a grid node may.
	idleTimeout = 4 * time.Minute
	// openProbeTimeout bounds the handshake Open tries, so a caller
	// without a deadline is not held up by a hanging server.
	openProbeTimeout = 10 * time.Second
)

// Backend is one 0-db namespace. Safe for concurrent use.
type Backend struct {
	name string
	addr string
	ns   string
	pool *pool
}

var _ backends.Backend = (*Backend)(nil)

// Open returns a backend for the spec's namespace; password is the
// namespace password ("" for none). It tries one handshake: wrong
// credentials fail Open with ErrAuth, while an unreachable server does not
// (the backend is returned and its calls report ErrUnavailable until the
// server answers), so a store can start with a node down.
func Open(ctx context.Context, spec backends.Spec, password string) (*Backend, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.Kind != backends.KindZDB {
		return nil, fmt.Errorf("backend %s: zdb.Open given kind %q", spec.Name, spec.Kind)
	}
	if _, _, err := net.SplitHostPort(spec.Address); err != nil {
		return nil, fmt.Errorf("backend %s: address %q is not host:port: %w", spec.Name, spec.Address, err)
	}
	b := &Backend{name: spec.Name, addr: spec.Address, ns: spec.Namespace}
	b.pool = newPool(PoolSize, idleTimeout, func(ctx context.Context) (*conn, error) {
		return dialNamespace(ctx, spec.Address, spec.Namespace, password)
	})
	pctx, cancel := context.WithTimeout(ctx, openProbeTimeout)
	defer cancel()
	c, _, err := b.pool.get(pctx)
	if err == nil {
		b.pool.put(c)
	} else if k := kindOf(err); k == backends.ErrAuth {
		b.pool.close()
		return nil, b.fail("open", "", err)
	}
	return b, nil
}

// dial opens a TCP connection bounded by ctx.
func dial(ctx context.Context, addr string) (*conn, error) {
	d := net.Dialer{KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newConn(nc, addr), nil
}

// secureHash is 0-db's challenge response: the hex SHA-1 of
// "<challenge>:<password>".
func secureHash(challenge, password string) string {
	sum := sha1.Sum([]byte(challenge + ":" + password))
	return hex.EncodeToString(sum[:])
}

// challenge asks for a single-use AUTH SECURE challenge.
func challenge(ctx context.Context, c *conn) (string, error) {
	reply, err := c.do(ctx, "AUTH", "SECURE", "CHALLENGE")
	if err != nil {
		return "", err
	}
	ch, err := redis.String(reply, nil)
	if err != nil || ch == "" {
		return "", fmt.Errorf("%w: AUTH SECURE CHALLENGE answered %T", errCorrupt, reply)
	}
	return ch, nil
}

// dialNamespace connects and selects the namespace, by challenge when there
// is a password.
func dialNamespace(ctx context.Context, addr, ns, password string) (*conn, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	var reply any
	if password != "" {
		var ch string
		if ch, err = challenge(ctx, c); err == nil {
			reply, err = c.do(ctx, "SELECT", ns, "SECURE", secureHash(ch, password))
		}
	} else {
		reply, err = c.do(ctx, "SELECT", ns)
	}
	if err == nil {
		if s, _ := redis.String(reply, nil); s != "OK" {
			err = fmt.Errorf("%w: SELECT answered %v", errCorrupt, reply)
		}
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("select namespace %s: %w", ns, err)
	}
	return c, nil
}

// Name implements backends.Backend.
func (b *Backend) Name() string { return b.name }

func (b *Backend) fail(op, key string, err error) error {
	return backends.Wrap(b.name, op, key, kindOf(err), err)
}

func (b *Backend) checkKey(op, key string) error {
	if err := backends.CheckKey(key); err != nil {
		return backends.InvalidKey(b.name, op, key, err)
	}
	return nil
}

// Put implements backends.Backend.
func (b *Backend) Put(ctx context.Context, key string, value []byte) error {
	if err := b.checkKey("put", key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return backends.Errorf(b.name, "put", key, backends.ErrTooLarge,
			"%d bytes, 0-db takes at most %d", len(value), MaxValueSize)
	}
	if value == nil {
		value = []byte{} // redigo would send nil as "", but be explicit
	}
	reply, err := b.pool.do(ctx, "SET", key, value)
	if err != nil {
		return b.fail("put", key, err)
	}
	switch r := reply.(type) {
	case []byte:
		if string(r) != key {
			return backends.Errorf(b.name, "put", key, backends.ErrCorruptReply, "SET echoed key %q", r)
		}
		return nil
	case nil:
		// "Unchanged": 0-db found a value with the same CRC32. Make sure
		// it is the same bytes, not a collision that left the old value.
		// Another writer may have changed the key between the SET and
		// this GET; only a value with our CRC32 but other bytes is the
		// collision. Other bytes with another CRC32, or no value, mean a
		// later Put or Delete won, which is a success for this one.
		got, err := b.Get(ctx, key)
		if errors.Is(err, backends.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if collides(value, got) {
			return backends.Errorf(b.name, "put", key, backends.ErrCorruptReply,
				"SET reported the value unchanged but a different value with the same CRC32 is stored")
		}
		return nil
	}
	return backends.Errorf(b.name, "put", key, backends.ErrCorruptReply, "SET answered %T", reply)
}

// collides reports whether stored, read back after 0-db called a SET of
// ours unchanged, is a different value with the same CRC32: the SET was
// dropped. A value with another CRC32 was written after ours.
func collides(ours, stored []byte) bool {
	return !bytes.Equal(ours, stored) && crc32.Checksum(ours, castagnoli) == crc32.Checksum(stored, castagnoli)
}

// Get implements backends.Backend.
func (b *Backend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := b.checkKey("get", key); err != nil {
		return nil, err
	}
	reply, err := b.pool.do(ctx, "GET", key)
	if err != nil {
		return nil, b.fail("get", key, err)
	}
	switch r := reply.(type) {
	case []byte:
		return r, nil
	case nil:
		return nil, backends.Wrap(b.name, "get", key, backends.ErrNotFound, nil)
	}
	return nil, backends.Errorf(b.name, "get", key, backends.ErrCorruptReply, "GET answered %T", reply)
}

// GetRange implements backends.Backend. 0-db has no ranged read, so it is a
// GET and a slice.
func (b *Backend) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if off < 0 || length < 0 {
		return nil, backends.Errorf(b.name, "get", key, backends.ErrInvalidKey, "negative range %d+%d", off, length)
	}
	v, err := b.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if off >= int64(len(v)) {
		return []byte{}, nil
	}
	end := int64(len(v))
	if length < end-off {
		end = off + length
	}
	return v[off:end], nil
}

// Stat implements backends.Backend (LENGTH).
func (b *Backend) Stat(ctx context.Context, key string) (int64, error) {
	if err := b.checkKey("stat", key); err != nil {
		return 0, err
	}
	reply, err := b.pool.do(ctx, "LENGTH", key)
	if err != nil {
		return 0, b.fail("stat", key, err)
	}
	switch r := reply.(type) {
	case int64:
		if r < 0 {
			return 0, backends.Errorf(b.name, "stat", key, backends.ErrCorruptReply, "LENGTH answered %d", r)
		}
		return r, nil
	case nil:
		return 0, backends.Wrap(b.name, "stat", key, backends.ErrNotFound, nil)
	}
	return 0, backends.Errorf(b.name, "stat", key, backends.ErrCorruptReply, "LENGTH answered %T", reply)
}

// Delete implements backends.Backend.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := b.checkKey("delete", key); err != nil {
		return err
	}
	reply, err := b.pool.do(ctx, "DEL", key)
	if err != nil {
		if kindOf(err) == backends.ErrNotFound {
			return nil
		}
		return b.fail("delete", key, err)
	}
	if s, _ := redis.String(reply, nil); s != "OK" {
		return backends.Errorf(b.name, "delete", key, backends.ErrCorruptReply, "DEL answered %v", reply)
	}
	return nil
}

// scanEntry is one [key, size, timestamp] of a SCAN batch.
type scanEntry struct {
	key  []byte
	size int64
}

// parseScan reads SCAN's reply: [cursor, [[key, size, ts], ...]].
func parseScan(reply any) (cursor []byte, entries []scanEntry, err error) {
	top, ok := reply.([]any)
	if !ok || len(top) != 2 {
		return nil, nil, fmt.Errorf("%w: SCAN answered %T", errCorrupt, reply)
	}
	cursor, ok = top[0].([]byte)
	list, ok2 := top[1].([]any)
	if !ok || !ok2 || len(cursor) == 0 {
		return nil, nil, fmt.Errorf("%w: SCAN reply without cursor and list", errCorrupt)
	}
	for _, it := range list {
		e, ok := it.([]any)
		if !ok || len(e) < 2 {
			return nil, nil, fmt.Errorf("%w: SCAN entry %T", errCorrupt, it)
		}
		k, ok1 := e[0].([]byte)
		n, ok2 := e[1].(int64)
		if !ok1 || !ok2 || n < 0 {
			return nil, nil, fmt.Errorf("%w: SCAN entry of %T, %T (%v)", errCorrupt, e[0], e[1], e[1])
		}
		entries = append(entries, scanEntry{k, n})
	}
	return cursor, entries, nil
}

// List implements backends.Backend by walking SCAN to "No more data" and
// filtering by prefix (0-db has no prefix scan).
func (b *Backend) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	var cursor []byte
	for {
		var reply any
		var err error
		if cursor == nil {
			reply, err = b.pool.do(ctx, "SCAN")
		} else {
			reply, err = b.pool.do(ctx, "SCAN", cursor)
		}
		if err != nil {
			var re redis.Error
			if errors.As(err, &re) && string(re) == "No more data" {
				return nil
			}
			return b.fail("list", prefix, err)
		}
		cur, entries, err := parseScan(reply)
		if err != nil {
			return b.fail("list", prefix, err)
		}
		for _, e := range entries {
			if strings.HasPrefix(string(e.key), prefix) {
				if err := fn(string(e.key), e.size); err != nil {
					return err
				}
			}
		}
		cursor = cur
	}
}

// Probe implements backends.Backend: NSINFO of the namespace on a pooled
// connection, so the namespace handshake (and its credentials) is part of
// what a probe checks.
func (b *Backend) Probe(ctx context.Context) (backends.ProbeResult, error) {
	start := time.Now()
	reply, err := b.pool.do(ctx, "NSINFO", b.ns)
	if err != nil {
		return backends.ProbeResult{}, b.fail("probe", "", err)
	}
	text, ok := reply.([]byte)
	if !ok {
		return backends.ProbeResult{}, backends.Errorf(b.name, "probe", "", backends.ErrCorruptReply, "NSINFO answered %T", reply)
	}
	return backends.ProbeResult{Latency: time.Since(start), Capacity: capacityOf(string(text))}, nil
}

// Close implements backends.Backend.
func (b *Backend) Close() error {
	b.pool.close()
	return nil
}
