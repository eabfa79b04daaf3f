// Package all opens a backend of any kind from its Spec: it resolves the
// spec's secret, calls the kind's Open, and wraps the result with the
// per-call deadline decorator. It is the one place the store assembles
// backends, so every backend in a store gets the same decorators.
package all
