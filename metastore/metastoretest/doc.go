// Package metastoretest is the conformance suite every metastore engine
// runs: RunKV checks the KV contract (conditions, atomicity, ordering,
// copies, close), RunStore checks the typed Store on top of that engine
// (records, index consistency, queue order, compare-and-swap under
// concurrency). memkv, pebble and etcd each call both with a factory.
//
// Component helpers: EtcdEndpoints reads HEALSTORE_ETCD_ENDPOINTS and skips
// (or, under HEALSTORE_REQUIRE_COMPONENTS=1, fails) when it is unset.
package metastoretest
