package metastore

import "time"

// Policy mirrors encoder.Policy (metastore imports none of healstore's
// packages); the JSON field names are the same.
type Policy struct {
	K           int    `json:"k"`
	M           int    `json:"m"`
	BlockSize   int    `json:"block_size"`
	Compression string `json:"compression"`
	Encryption  string `json:"encryption"`
	Checksum    string `json:"checksum"`
}

// Object is one named byte sequence: the current version under its name.
type Object struct {
	Name     string
	ID       [16]byte // object id (encoder.ObjectID), random per version
	Size     int64
	Created  time.Time
	Modified time.Time
	Policy   Policy
	Stripes  [][16]byte // one per block, in block order
	Mode     uint32     // optional (FUSE file mode)
	// Attrs holds small optional attributes (FUSE owner, content type...).
	// Keys and values must be valid UTF-8.
	Attrs map[string]string
	// Inline, when not empty, is the object's whole content as one sealed
	// block (ciphertext when the policy encrypts), kept in this record
	// instead of in stripes: Stripes is then empty. InlineSum is the
	// policy's checksum of Inline. Small objects are stored this way
	// (docs/format.md, "Inline objects").
	Inline    []byte
	InlineSum []byte
}

// ShardLoc says where one shard of a stripe lives. Backend == "" means the
// shard is missing (its repair is queued).
type ShardLoc struct {
	Backend string
	Key     string
	Size    int64
	Sum     []byte // checksum of the full shard (header + payload)
}

// Stripe is one erasure-coded block and the location of each shard.
type Stripe struct {
	ID      [16]byte
	Object  [16]byte // object id
	Block   uint64
	K, M    int
	DataLen int
	Shards  []ShardLoc // len K+M, index = shard index
	// Version is bumped on every update and makes UpdateStripe a
	// compare-and-swap. PutObject stores new stripes at version 1.
	Version uint64
}

// Present returns the indices of shards that have a location.
func (s *Stripe) Present() []int {
	var out []int
	for i, sh := range s.Shards {
		if sh.Backend != "" {
			out = append(out, i)
		}
	}
	return out
}

// Missing returns the indices of shards without a location.
func (s *Stripe) Missing() []int {
	var out []int
	for i, sh := range s.Shards {
		if sh.Backend == "" {
			out = append(out, i)
		}
	}
	return out
}

// Backends returns the distinct backends holding a shard of the stripe, in
// shard order.
func (s *Stripe) Backends() []string {
	seen := make(map[string]bool, len(s.Shards))
	var out []string
	for _, sh := range s.Shards {
		if sh.Backend != "" && !seen[sh.Backend] {
			seen[sh.Backend] = true
			out = append(out, sh.Backend)
		}
	}
	return out
}

// Margin counts the shards whose backend `usable` accepts, minus K: how
// many more shards the stripe can lose. usable == nil counts every placed
// shard. Negative means the block cannot be decoded.
func (s *Stripe) Margin(usable func(backend string) bool) int {
	n := 0
	for _, sh := range s.Shards {
		if sh.Backend != "" && (usable == nil || usable(sh.Backend)) {
			n++
		}
	}
	return n - s.K
}

// BackendState is the lifecycle state of a backend.
type BackendState string

// Backend states.
const (
	StateUp       BackendState = "up"
	StateSuspect  BackendState = "suspect"  // probes failing, inside the grace period
	StateDown     BackendState = "down"     // gone for good; its shards are rebuilt elsewhere
	StateDraining BackendState = "draining" // being evacuated; no new shards
	StateRetired  BackendState = "retired"  // empty and released
	StateReplaced BackendState = "replaced" // wiped or swapped; its old shards are gone
)

// Capacity mirrors backends.Capacity.
type Capacity struct {
	Known bool
	Used  int64
	Limit int64
	Free  int64
}

// BackendRecord is what healstore remembers about one backend.
type BackendRecord struct {
	Name string
	// SpecJSON is the backend's spec (backends.Spec) as JSON. It must be
	// valid JSON and must never hold a secret (the spec holds a SecretRef).
	SpecJSON      []byte
	State         BackendState
	Since         time.Time // when State was entered
	LastProbe     time.Time
	ProbeFailures int    // consecutive failed probes
	LastError     string // last probe or data-path error
	Capacity      Capacity
	Domain        string // failure domain at the store's level
	Spare         bool
	Marker        string // identity marker written on the backend
}

// RepairItem is one entry of the repair queue: a stripe short of shards.
type RepairItem struct {
	Stripe    [16]byte
	Margin    int       // healthy shards minus K when queued; lowest first
	Queued    time.Time // when first queued; older first at equal margin
	Reason    string
	Attempts  int
	LastError string
	NotBefore time.Time // back-off: not to be retried before this time
}

// Garbage is a shard to delete from a backend once After has passed.
type Garbage struct {
	Backend string
	Key     string
	After   time.Time
}

// Intent is the write-ahead record of shards being uploaded. It is added
// before the uploads start and removed in the commit that references the
// shards, so the shards of a crashed write are found by listing intents.
type Intent struct {
	ID      [16]byte
	Shards  []ShardLoc
	Created time.Time
}
