package encoder

import (
	"errors"
	"fmt"
	"strings"
)

// Error kinds. Callers test them with errors.Is.
var (
	// ErrAuth: a sealed block did not open. The master key is wrong, or the
	// block was moved (other object, block index, stripe or policy), or it was
	// tampered with after its checksums were recomputed.
	ErrAuth = errors.New("encoder: sealed block does not open (wrong key, moved or tampered block)")
	// ErrCorrupt: a shard or a decoded block is damaged. Shard-level errors
	// are *ShardError values naming the index.
	ErrCorrupt = errors.New("encoder: corrupt")
	// ErrTooFewShards: fewer than k good shards; the error is a
	// *TooFewShardsError naming present, missing and corrupt indices.
	ErrTooFewShards = errors.New("encoder: too few good shards")
	// ErrInvalidPolicy: Policy.Validate failed; the error is a *PolicyError.
	ErrInvalidPolicy = errors.New("encoder: invalid policy")
)

// PolicyError names the policy field that is wrong.
type PolicyError struct {
	Field  string // as spelled in the TOML config: "k", "m", "k+m", "block_size", ...
	Reason string
}

func (e *PolicyError) Error() string {
	return "encoder: invalid policy: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidPolicy) true.
func (e *PolicyError) Is(target error) bool { return target == ErrInvalidPolicy }

// ShardError says why one shard failed verification. It matches ErrCorrupt.
type ShardError struct {
	Index  int // shard index within the stripe; -1 when unknown
	Reason string
}

func (e *ShardError) Error() string {
	if e.Index < 0 {
		return "encoder: corrupt shard: " + e.Reason
	}
	return fmt.Sprintf("encoder: corrupt shard %d: %s", e.Index, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *ShardError) Is(target error) bool { return target == ErrCorrupt }

// TooFewShardsError reports a stripe that cannot be decoded: fewer than Need
// good shards. Present holds the indices that verified good, Missing those
// not supplied (nil), Corrupt those that failed verification, with the reason
// for each in Causes (same order as Corrupt). Indices not listed anywhere were
// supplied but not needed, so not checked.
type TooFewShardsError struct {
	Need    int
	Present []int
	Missing []int
	Corrupt []int
	Causes  []error
}

func (e *TooFewShardsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "encoder: too few good shards: need %d, have %d (present %v, missing %v, corrupt %v",
		e.Need, len(e.Present), ints(e.Present), ints(e.Missing), ints(e.Corrupt))
	for _, c := range e.Causes {
		var se *ShardError
		if errors.As(c, &se) {
			fmt.Fprintf(&b, "; %d: %s", se.Index, se.Reason)
		}
	}
	b.WriteString(")")
	return b.String()
}

// Is makes errors.Is(err, ErrTooFewShards) true.
func (e *TooFewShardsError) Is(target error) bool { return target == ErrTooFewShards }

// ints prints nil and empty slices alike, as [].
func ints(v []int) []int {
	if v == nil {
		return []int{}
	}
	return v
}
