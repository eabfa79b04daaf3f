// Package backends defines the storage a shard lands on: one small Backend
// interface for opaque keys and values, the typed errors callers branch on,
// and the Spec that names a backend in the config. Implementations live in
// sub-packages (local, zdb, s3); decorators (faulty, deadline) wrap any of
// them; backendtest is the one conformance suite they all run.
//
// Backends know nothing of stripes: a key is an opaque string and a value an
// opaque byte slice.
package backends

import (
	"context"
	"time"
)

// Backend stores opaque values under opaque keys.
//
// Contracts every implementation keeps (backendtest checks them):
//   - Keys are 1..200 bytes of [A-Za-z0-9._-/]; no key is ever both a value
//     and a prefix of another key followed by '/'. Callers keep to that so
//     file-path based servers (local, versitygw) work.
//   - Put is atomic: after a crash a key holds the old value, the new one, or
//     nothing; never a partial value. Put of an existing key replaces it.
//     (The optional Syncer's PutNoSync is weaker until its Sync returns:
//     see sync.go.)
//   - Get of a missing key returns an error matching ErrNotFound.
//   - Delete of a missing key returns nil (idempotent).
//   - Every call honours ctx: when ctx is done the call returns promptly with
//     an error matching ErrUnavailable (and ctx.Err()).
//   - Errors are *Error values wrapping one of the sentinel kinds below; they
//     name the backend and key and never contain a password or secret.
//   - Safe for concurrent use.
type Backend interface {
	// Name is the backend's unique name in the store (from its Spec).
	Name() string
	// Put stores value under key, replacing any old value.
	Put(ctx context.Context, key string, value []byte) error
	// Get returns the whole value stored under key.
	Get(ctx context.Context, key string) ([]byte, error)
	// GetRange returns length bytes of the value starting at off. A range
	// past the end is truncated to the value; off beyond the end gives an
	// empty slice.
	GetRange(ctx context.Context, key string, off, length int64) ([]byte, error)
	// Stat returns the size of the value stored under key, or ErrNotFound.
	Stat(ctx context.Context, key string) (int64, error)
	// Delete removes key. A missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every key that starts with prefix, in no particular
	// order. Returning an error from fn stops the walk and List returns it.
	List(ctx context.Context, prefix string, fn func(key string, size int64) error) error
	// Probe checks that the backend answers and reports its capacity.
	Probe(ctx context.Context) (ProbeResult, error)
	// Close releases connections; the Backend is unusable afterwards.
	Close() error
}

// ProbeResult is what one Probe saw.
type ProbeResult struct {
	Latency  time.Duration
	Capacity Capacity
}

// Capacity in bytes. Known is false when the store cannot say (S3 without a
// configured quota); then Used, Limit and Free are zero.
type Capacity struct {
	Known bool  `json:"known"`
	Used  int64 `json:"used"`
	Limit int64 `json:"limit"`
	Free  int64 `json:"free"`
	// Device names the space this capacity is of when other backends may
	// share it (local directories on one file system report the same
	// Device, and the same free space): whoever sums capacities counts
	// each Device once. Empty for space of the backend's own (a bucket,
	// a namespace).
	Device string `json:"device,omitempty"`
	// DeviceFree and DeviceTotal are set for a quota on a Device (a local
	// directory with a quota): Free and Limit are the quota's, these the
	// file system's. Quotas on one file system together have no more
	// than it has.
	DeviceFree  int64 `json:"device_free,omitempty"`
	DeviceTotal int64 `json:"device_total,omitempty"`
}

// SpaceSum adds up the capacities of several backends, each Device once:
// backends sharing a file system each report all of it, and quotas on one
// file system together count no more than it has.
type SpaceSum struct {
	// Total and Free are in bytes; Spaces counts the distinct spaces
	// added (file systems, or a backend's own space).
	Total, Free int64
	Spaces      int
	devs        map[string]*deviceSpace
}

// deviceSpace is what the capacities of one Device add up to.
type deviceSpace struct {
	whole                 bool  // a backend without a quota reported all of it
	free, total           int64 // the quotas' sums
	capFree, capTotal     int64 // the device's own
	countFree, countTotal int64 // what it adds to the sum now
}

// Add counts c, once per Device. c must be Known.
func (s *SpaceSum) Add(c Capacity) {
	total := c.Limit
	if total <= 0 {
		total = c.Used + c.Free
	}
	total, free := max(total, 0), max(c.Free, 0)
	if c.Device == "" {
		s.Total += total
		s.Free += free
		s.Spaces++
		return
	}
	d := s.devs[c.Device]
	if d == nil {
		if s.devs == nil {
			s.devs = map[string]*deviceSpace{}
		}
		d = &deviceSpace{}
		s.devs[c.Device] = d
		s.Spaces++
	}
	if c.DeviceTotal <= 0 {
		// No quota: the backend may fill the whole device.
		d.whole, d.capFree, d.capTotal = true, free, total
	} else {
		d.free += free
		d.total += total
		if !d.whole {
			d.capFree, d.capTotal = max(c.DeviceFree, 0), c.DeviceTotal
		}
	}
	nowFree, nowTotal := d.capFree, d.capTotal
	if !d.whole {
		nowFree, nowTotal = min(d.free, d.capFree), min(d.total, d.capTotal)
	}
	s.Free += nowFree - d.countFree
	s.Total += nowTotal - d.countTotal
	d.countFree, d.countTotal = nowFree, nowTotal
}
