// Package healer keeps a healstore store at full redundancy without a
// human: it watches backends, decides which stripes need work, provisions
// replacement capacity and rebuilds missing shards there.
//
// The pieces, all driven by one Healer:
//
//   - Monitor: probes every backend on an interval and hears the data
//     path's errors (Report). A backend goes up -> suspect after failed
//     probes, suspect -> down after the grace period, and back to up if it
//     answers first; an outage shorter than the grace costs no rebuild
//     bytes, except for stripes it leaves at margin 0, which are repaired at
//     once. Each backend holds an identity marker; one found missing or
//     foreign means the backend was wiped, and everything it held is queued
//     at once.
//   - Repair queue and rebuilder: the queue lives in the metastore (lowest
//     margin first, then oldest). Workers read any K verified shards of a
//     stripe, rebuild only the missing ones, write them to targets that keep
//     the placement invariant, commit the new locations with a
//     compare-and-swap, and only then hand the old locations to garbage
//     collection. Workers and a bytes/s cap change while running.
//   - Provisioning: when a backend is declared down the healer promotes a
//     spare or asks its provisioners for a new backend, registers it (record
//     and marker) and rebuilds onto it; it also keeps a target number of
//     spares.
//   - Scrubber (light: exists with the right size; deep: read and verify;
//     plus the placement check), drain, and garbage collection.
//   - Metrics on a private Prometheus registry, a JSON status, and an HTTP
//     handler serving both plus the operator's actions.
//
// Decisions are made by the pure healer/plan package; this package gathers
// state and carries the decisions out.
package healer
