// Package memkv is an in-memory metastore.KV for tests: the same semantics
// as the durable engines (conditions, copies, ordered scans, ErrClosed),
// nothing kept across processes. It passes the same conformance suite.
package memkv
