// Package faulty is a decorator that makes any backends.Backend misbehave on
// a seeded schedule: added latency, calls failing as unavailable, offline
// windows (toggled by hand or scheduled), values lost silently (a Put that
// succeeds but whose value later reads as missing) and bit flips in values
// returned by Get. Healer and chaos tests use it to drive a store through
// failures it must survive; with every fault off it is a transparent
// wrapper and passes the backends conformance suite.
//
// Random decisions come from one PCG stream seeded by Config.Seed, so a
// single-goroutine test replays exactly; under concurrency the set of
// decisions is the same but their assignment to calls follows scheduling.
package faulty
