// Package plan is the healer's decision making, apart from any I/O: the
// backend monitor's state machine (Observe) and the per-stripe repair plan
// (Stripe). State goes in, decisions come out; the healer package gathers
// the state from the metastore and probes, and carries the decisions out.
// Keeping them pure lets table tests pin every transition and every repair
// choice down.
package plan
