package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/healstore/healstore/backends"
)

// Constraints narrow what a Provisioner may return.
type Constraints struct {
	// AvoidDomains lists failure domains (backends.Spec.Domain(Level) form)
	// already used; the new backend must lie outside all of them.
	AvoidDomains []string
	// Level is the failure-domain level, "node" or "farm".
	Level string
	// MinSize is the least capacity in bytes the backend must offer; 0 = any.
	MinSize int64
	// NameHint is a suggested backend name prefix.
	NameHint string
	// TakenNames lists the names of every backend the store has a record
	// of, whatever its state: a provisioner that makes up names must not
	// use one. A released backend's capacity is gone but its record stays
	// (replaced, retired), so the name is not free again.
	TakenNames []string
}

// Avoids reports whether the spec's domain at the constraint's level is one
// the caller asked to avoid.
func (c Constraints) Avoids(spec backends.Spec) bool {
	return slices.Contains(c.AvoidDomains, spec.Domain(c.Level))
}

// Provisioner finds new capacity.
type Provisioner interface {
	// Name identifies the provisioner in logs and backend records.
	Name() string
	// Provision returns a new, reachable backend spec. secret is the
	// namespace password / S3 secret ("" if none); the caller stores it in the
	// secret store under spec.SecretRef.
	Provision(ctx context.Context, c Constraints) (spec backends.Spec, secret string, err error)
	// Release gives the capacity back (cancel a contract, delete a dir) when
	// a backend is retired.
	Release(ctx context.Context, spec backends.Spec) error
}

// ErrNoCapacity means the provisioner has nothing that meets the
// constraints. The healer retries later (or with another provisioner).
var ErrNoCapacity = errors.New("no capacity meets the constraints")

// NoCapacityError says why nothing fit. It matches ErrNoCapacity.
type NoCapacityError struct {
	Provisioner string
	Reason      string
}

func (e *NoCapacityError) Error() string {
	return fmt.Sprintf("provisioner %s: %s: %s", e.Provisioner, ErrNoCapacity, e.Reason)
}

// Is makes errors.Is(err, ErrNoCapacity) true.
func (e *NoCapacityError) Is(target error) bool { return target == ErrNoCapacity }
