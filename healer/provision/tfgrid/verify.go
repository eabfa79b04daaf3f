package tfgrid

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/zdb"
)

// VerifyZDB opens the namespace with its password and checks it with
// VerifyWritable. It is the default check on every new namespace.
func VerifyZDB(ctx context.Context, spec backends.Spec, password string) error {
	b, err := zdb.Open(ctx, spec, password)
	if err != nil {
		return fmt.Errorf("opening %s: %w", spec.Name, err)
	}
	defer b.Close()
	return VerifyWritable(ctx, b)
}

// VerifyWritable checks that b answers a probe and round-trips a value:
// put a random probe key, read it back, delete it. A namespace that
// answers PING but refuses writes (wrong password, read-only, full) fails
// here instead of on the first shard the healer sends it.
func VerifyWritable(ctx context.Context, b backends.Backend) error {
	if _, err := b.Probe(ctx); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	key := "healstore-probe." + hex.EncodeToString(r[:8])
	val := []byte("healstore provisioning probe " + hex.EncodeToString(r[8:]))
	if err := b.Put(ctx, key, val); err != nil {
		return fmt.Errorf("probe write: %w", err)
	}
	got, err := b.Get(ctx, key)
	if err != nil {
		return errors.Join(fmt.Errorf("probe read: %w", err), b.Delete(ctx, key))
	}
	if !bytes.Equal(got, val) {
		return errors.Join(fmt.Errorf("probe read back %d bytes that differ from the %d written", len(got), len(val)), b.Delete(ctx, key))
	}
	if err := b.Delete(ctx, key); err != nil {
		return fmt.Errorf("probe delete: %w", err)
	}
	return nil
}
