package metastore

import (
	"bytes"
	"context"
	"fmt"
	"strings"
)

// maxProblems caps Check's report; past it the store is broken enough.
const maxProblems = 1000

// Check verifies the cross-record invariants the Store maintains and
// returns a description of each violation found (nil when consistent):
// every stripe an object lists exists and names that object; every stripe
// belongs to exactly one object; the backend index holds exactly the
// (backend, stripe) pairs the stripes place shards on; each queue entry
// and its qidx entry point at each other. It reads everything, holding a
// set of stripe ids in memory; for tests, crash recovery checks and fsck.
func (s *Store) Check(ctx context.Context) ([]string, error) {
	var problems []string
	report := func(format string, args ...any) error {
		problems = append(problems, fmt.Sprintf(format, args...))
		if len(problems) >= maxProblems {
			return ErrStop
		}
		return nil
	}
	type ref struct {
		name string
		id   [16]byte
	}
	owner := make(map[[16]byte]ref) // stripe -> listing object
	err := s.scan(ctx, []byte(pObject), nil, func(k, v []byte) error {
		o, err := decodeObject(k, v)
		if err != nil {
			return report("object %q: %v", k, err)
		}
		for _, id := range o.Stripes {
			if prev, dup := owner[id]; dup {
				if err := report("stripe %s listed by objects %q and %q", hexID(id), prev.name, o.Name); err != nil {
					return err
				}
				continue
			}
			owner[id] = ref{o.Name, o.ID}
		}
		return nil
	})
	if err != nil {
		return problems, fmt.Errorf("check objects: %w", err)
	}

	seen := make(map[[16]byte]bool, len(owner))
	placed := make(map[string]bool) // index key -> expected
	err = s.scan(ctx, []byte(pStripe), nil, func(k, v []byte) error {
		st, err := decodeStripe(k, v)
		if err != nil {
			return report("stripe %q: %v", k, err)
		}
		seen[st.ID] = true
		r, ok := owner[st.ID]
		if !ok {
			if err := report("stripe %s belongs to no object", hexID(st.ID)); err != nil {
				return err
			}
		} else if r.id != st.Object {
			if err := report("stripe %s names object id %s but is listed by %q (id %s)",
				hexID(st.ID), hexID(st.Object), r.name, hexID(r.id)); err != nil {
				return err
			}
		}
		for _, be := range st.Backends() {
			placed[string(indexKey(be, st.ID))] = true
		}
		return nil
	})
	if err != nil {
		return problems, fmt.Errorf("check stripes: %w", err)
	}
	for id, r := range owner {
		if !seen[id] {
			if report("object %q lists missing stripe %s", r.name, hexID(id)) != nil {
				return problems, nil
			}
		}
	}

	err = s.scan(ctx, []byte(pIndex), nil, func(k, _ []byte) error {
		if placed[string(k)] {
			delete(placed, string(k))
			return nil
		}
		return report("index entry %q has no matching shard", k)
	})
	if err != nil {
		return problems, fmt.Errorf("check index: %w", err)
	}
	for k := range placed {
		if report("missing index entry %q", k) != nil {
			return problems, nil
		}
	}

	queued := make(map[string]bool)
	err = s.scan(ctx, []byte(pQueue), nil, func(k, v []byte) error {
		it, err := decodeRepair(k, v)
		if err != nil {
			return report("queue entry %q: %v", k, err)
		}
		if !bytes.Equal(queueKey(it), k) {
			return report("queue entry %q does not match its record", k)
		}
		queued[string(k)] = true
		return nil
	})
	if err != nil {
		return problems, fmt.Errorf("check queue: %w", err)
	}
	err = s.scan(ctx, []byte(pQIndex), nil, func(k, v []byte) error {
		if !queued[string(v)] {
			return report("qidx %q points at missing queue entry %q", k, v)
		}
		if !strings.HasSuffix(string(v), "/"+string(k[len(pQIndex):])) {
			return report("qidx %q points at another stripe's entry %q", k, v)
		}
		delete(queued, string(v))
		return nil
	})
	if err != nil {
		return problems, fmt.Errorf("check queue index: %w", err)
	}
	for k := range queued {
		if report("queue entry %q has no qidx entry", k) != nil {
			return problems, nil
		}
	}
	return problems, nil
}
