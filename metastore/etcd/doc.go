// Package etcdkv is healstore's shared metadata engine: a metastore.KV on
// etcd, so that several healstore processes on different machines share
// one truth.
//
// All keys live under a configurable prefix. A batch is one etcd
// transaction: its conditions become compares (value equality, or
// CreateRevision == 0 for "missing") and its writes the transaction's
// operations, so it commits atomically or not at all. Batches are never
// split. etcd limits a transaction to --max-txn-ops operations (default
// 128) and a request to --max-request-bytes (default 1.5 MiB); healstore
// commits one object with all its stripes in one batch, so etcd must run
// with larger limits (docs/metadata.md: --max-txn-ops 10000
// --max-request-bytes 33554432 or more). A batch over the server's limits
// fails with metastore.ErrTooLarge naming the flag.
//
// Every call has a deadline (WithRequestTimeout); an unreachable etcd gives
// metastore.ErrUnavailable.
//
// WithTLS and WithAuth reach a secured cluster. A refusal by etcd's
// authentication gives ErrAuth; an Open that fails because the TLS
// handshake does (checked by dialling the endpoints after the failure)
// gives ErrTLS with what the handshake reported.
package etcdkv
