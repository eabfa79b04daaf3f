package backends

import "context"

// BufGetter is an optional ability of a Backend: Get into memory the
// caller provides. A read of a stripe fetches k shards, decodes them into
// the block, and drops them; with memory of its own for every shard, each
// read costs a fresh allocation the runtime must zero (a sixth of a cold
// 1 MiB read's CPU time) and as much garbage. alloc(n) returns n bytes the
// backend fills; the value returned is that memory (or a prefix of it).
type BufGetter interface {
	GetBuf(ctx context.Context, key string, alloc func(n int) []byte) ([]byte, error)
}

// GetBuf is b.Get into memory from alloc when b can, else b.Get. It does
// not look through decorators: each one that must see every read (fault
// injection, deadlines) implements BufGetter itself or is read with Get.
func GetBuf(ctx context.Context, b Backend, key string, alloc func(n int) []byte) ([]byte, error) {
	if g, ok := b.(BufGetter); ok && alloc != nil {
		return g.GetBuf(ctx, key, alloc)
	}
	return b.Get(ctx, key)
}

// The deadline decorator passes the ability on, bounded like Get.
var _ BufGetter = (*deadlineBackend)(nil)

func (w *deadlineBackend) GetBuf(ctx context.Context, key string, alloc func(n int) []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, w.d)
	defer cancel()
	v, err := GetBuf(ctx, w.b, key, alloc)
	return v, w.fix(ctx, "get", key, err)
}
