package provision

import (
	"context"
	"fmt"
	"sync"

	"github.com/healstore/healstore/backends"
)

// Spare hands out backends from a fixed pool listed in the config. Each
// spec keeps its SecretRef (the operator already put the secret in the
// secret store), so Provision returns an empty secret.
type Spare struct {
	mu    sync.Mutex
	specs []backends.Spec
	taken map[string]bool
	inUse func(name string) bool
}

var _ Provisioner = (*Spare)(nil)

// NewSpare builds a pool from specs, in the order given (the first fitting
// spec wins). inUse, when not nil, reports names the store already knows
// (registered backends); they are never handed out, so a restarted healer
// does not hand out the same spare twice.
func NewSpare(specs []backends.Spec, inUse func(name string) bool) (*Spare, error) {
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("spare pool: %w", err)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("spare pool: backend name %q listed twice", s.Name)
		}
		seen[s.Name] = true
	}
	return &Spare{specs: append([]backends.Spec(nil), specs...), taken: map[string]bool{}, inUse: inUse}, nil
}

// Name implements Provisioner.
func (p *Spare) Name() string { return "spare" }

// Provision returns the first spec not yet handed out that lies outside the
// avoided domains and offers at least MinSize (a spec without a quota is
// taken to be large enough: the pool's operator vouched for it).
func (p *Spare) Provision(ctx context.Context, c Constraints) (backends.Spec, string, error) {
	if err := ctx.Err(); err != nil {
		return backends.Spec{}, "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	free, fit := 0, 0
	for _, s := range p.specs {
		if p.taken[s.Name] || (p.inUse != nil && p.inUse(s.Name)) {
			continue
		}
		free++
		if c.Avoids(s) || (c.MinSize > 0 && s.Quota > 0 && s.Quota < c.MinSize) {
			continue
		}
		fit++
		p.taken[s.Name] = true
		return s, "", nil
	}
	return backends.Spec{}, "", &NoCapacityError{Provisioner: p.Name(),
		Reason: fmt.Sprintf("%d of %d spares unused, %d outside the avoided domains with room", free, len(p.specs), fit)}
}

// Release returns the spec to the pool; capacity is the operator's, so
// nothing is deleted.
func (p *Spare) Release(ctx context.Context, spec backends.Spec) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.taken, spec.Name)
	return nil
}

// Available counts the specs that could still be handed out.
func (p *Spare) Available() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.specs {
		if !p.taken[s.Name] && (p.inUse == nil || !p.inUse(s.Name)) {
			n++
		}
	}
	return n
}
