// Package placement decides which backends receive the shards of a stripe.
//
// It is pure: callers describe the eligible backends as Candidates (already
// filtered for state: never down, draining, retired or unreachable) and
// Choose returns one backend per shard, each in its own failure domain, so
// that losing a node (or a farm, at level "farm") costs a stripe at most one
// shard. The write path and the healer's rebuilder both use it, which is what
// keeps the placement invariant the same for new writes and rebuild targets.
package placement
