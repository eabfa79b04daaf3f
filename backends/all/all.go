package all

import (
	"context"
	"fmt"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/backends/s3"
	"github.com/healstore/healstore/backends/zdb"
)

// Open opens the backend spec describes, with every call bounded by
// backends.DefaultCallTimeout (30 s). secrets resolves spec.SecretRef (the
// zdb namespace password or the S3 secret key); it may be nil when the spec
// has no SecretRef.
func Open(ctx context.Context, spec backends.Spec, secrets backends.SecretLookup) (backends.Backend, error) {
	return OpenWithTimeout(ctx, spec, secrets, backends.DefaultCallTimeout)
}

// OpenUsed is Open for a backend that has held data before: a local
// backend whose directory is missing is unavailable, not made again
// (local.OpenUsed).
func OpenUsed(ctx context.Context, spec backends.Spec, secrets backends.SecretLookup) (backends.Backend, error) {
	return openSpec(ctx, spec, secrets, backends.DefaultCallTimeout, true)
}

// OpenWithTimeout is Open with a per-call timeout of d (d <= 0 means the
// default). Opening itself is bounded by d too.
func OpenWithTimeout(ctx context.Context, spec backends.Spec, secrets backends.SecretLookup, d time.Duration) (backends.Backend, error) {
	return openSpec(ctx, spec, secrets, d, false)
}

func openSpec(ctx context.Context, spec backends.Spec, secrets backends.SecretLookup, d time.Duration, used bool) (backends.Backend, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	secret, err := resolve(spec, secrets)
	if err != nil {
		return nil, err
	}
	if d <= 0 {
		d = backends.DefaultCallTimeout
	}
	// Opening contacts the server (a handshake, a bucket check); it is a
	// call like any other and gets the same bound.
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var b backends.Backend
	switch spec.Kind {
	case backends.KindLocal:
		if used {
			b, err = local.OpenUsed(spec)
		} else {
			b, err = local.Open(spec)
		}
	case backends.KindZDB:
		b, err = zdb.Open(ctx, spec, secret)
	case backends.KindS3:
		b, err = s3.Open(ctx, spec, secret)
	default:
		// Validate knows the same kinds; this is for a kind added there
		// and forgotten here.
		return nil, fmt.Errorf("backend %s: kind %q has no implementation", spec.Name, spec.Kind)
	}
	if err != nil {
		return nil, err
	}
	return backends.WithDeadline(b, d), nil
}

func resolve(spec backends.Spec, secrets backends.SecretLookup) (string, error) {
	if spec.SecretRef == "" || spec.Kind == backends.KindLocal {
		return "", nil
	}
	if secrets == nil {
		return "", fmt.Errorf("backend %s: secret_ref %q given but no secret store: %w", spec.Name, spec.SecretRef, backends.ErrNoSecret)
	}
	s, err := secrets(spec.SecretRef)
	if err != nil {
		return "", fmt.Errorf("backend %s: secret_ref %q: %w", spec.Name, spec.SecretRef, err)
	}
	return s, nil
}

// MaxValueSize is the largest value a backend of the kind takes: 8 MiB for
// 0-db, a 64 MiB block's shard with room to spare for the others; 0 for an
// unknown kind.
func MaxValueSize(kind string) int {
	switch kind {
	case backends.KindZDB:
		return zdb.MaxValueSize
	case backends.KindLocal:
		return local.MaxValueSize
	case backends.KindS3:
		return s3.MaxValueSize
	}
	return 0
}
