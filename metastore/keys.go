package metastore

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Key prefixes. docs/metadata.md is the specification; keep them in sync.
const (
	pObject  = "obj/"     // obj/<name>                         -> object record
	pStripe  = "stripe/"  // stripe/<id hex>                    -> stripe record
	pIndex   = "bidx/"    // bidx/<backend>/<stripe hex>        -> empty
	pQueue   = "queue/"   // queue/<margin>/<queued>/<stripe>   -> repair record
	pQIndex  = "qidx/"    // qidx/<stripe hex>                  -> its queue key
	pBackend = "backend/" // backend/<name>                     -> backend record
	pGarbage = "garbage/" // garbage/<after>/<backend>/<key>    -> garbage record
	pIntent  = "intent/"  // intent/<id hex>                    -> intent record
	pMeta    = "meta/"    // meta/<name>                        -> raw bytes
	kStoreID = "sys/store-id"
)

// marginBias maps a signed margin onto an unsigned 16-bit field so that
// negative margins (data already lost) sort first.
const marginBias = 0x8000

func hexID(id [16]byte) string { return hex.EncodeToString(id[:]) }

func parseHexID(s string) ([16]byte, error) {
	var id [16]byte
	if len(s) != 32 {
		return id, fmt.Errorf("%w: id %q is not 32 hex digits", ErrCorrupt, s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: id %q: %v", ErrCorrupt, s, err)
	}
	return id, nil
}

func objectKey(name string) []byte      { return []byte(pObject + name) }
func stripeKey(id [16]byte) []byte      { return []byte(pStripe + hexID(id)) }
func backendKey(name string) []byte     { return []byte(pBackend + name) }
func intentKey(id [16]byte) []byte      { return []byte(pIntent + hexID(id)) }
func metaKey(name string) []byte        { return []byte(pMeta + name) }
func qindexKey(id [16]byte) []byte      { return []byte(pQIndex + hexID(id)) }
func indexPrefix(backend string) []byte { return []byte(pIndex + backend + "/") }

func indexKey(backend string, stripe [16]byte) []byte {
	return []byte(pIndex + backend + "/" + hexID(stripe))
}

// timeKey is a time as 16 hex digits of Unix nanoseconds, so byte order is
// time order. Times before 1970 clamp to 0.
func timeKey(t time.Time) string {
	var n uint64
	if !t.IsZero() && t.UnixNano() > 0 {
		n = uint64(t.UnixNano())
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return hex.EncodeToString(b[:])
}

func marginKey(m int) string {
	v := m + marginBias
	if v < 0 {
		v = 0
	}
	if v > 0xffff {
		v = 0xffff
	}
	return fmt.Sprintf("%04x", v)
}

func queueKey(it *RepairItem) []byte {
	return []byte(pQueue + marginKey(it.Margin) + "/" + timeKey(it.Queued) + "/" + hexID(it.Stripe))
}

func garbageKey(g *Garbage) []byte {
	return []byte(pGarbage + timeKey(g.After) + "/" + g.Backend + "/" + g.Key)
}

// parseGarbageKey recovers backend and shard key from a garbage key; the
// key is authoritative because a record's JSON strings cannot carry
// arbitrary bytes.
func parseGarbageKey(k []byte) (backend, key string, err error) {
	rest, ok := strings.CutPrefix(string(k), pGarbage)
	if !ok || len(rest) < 17 || rest[16] != '/' {
		return "", "", fmt.Errorf("%w: garbage key %q", ErrCorrupt, k)
	}
	backend, key, ok = strings.Cut(rest[17:], "/")
	if !ok || backend == "" {
		return "", "", fmt.Errorf("%w: garbage key %q", ErrCorrupt, k)
	}
	return backend, key, nil
}

func validBackendName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: backend name %q must be non-empty without '/'", ErrInvalid, name)
	}
	return nil
}
