// Package zdb is the backend for a 0-db (zdb) namespace in user-key mode.
//
// It speaks RESP2 through redigo's connection type, pooled here: every new
// connection runs the namespace handshake before use, because 0-db keeps the
// selected namespace per connection. With a password the handshake is the
// challenge flavour, so the password never crosses the wire:
//
//	AUTH SECURE CHALLENGE                      -> +<challenge>
//	SELECT <ns> SECURE <sha1hex(challenge:pw)> -> +OK
//
// and without one it is a plain SELECT <ns>.
//
// 0-db's quirks, from the recorded protocol reference, that shape the code:
//   - SET replies with the key, or nil when the value is unchanged (0-db
//     compares CRC32s); nil is success. Because a CRC match is not a byte
//     match, a nil reply is checked with a GET before Put reports success:
//     only a stored value with the same CRC32 but other bytes is an error
//     (a value with another CRC32 was written by a later Put).
//   - DEL replies +OK, or the error "Key not found", which is success here.
//   - An argument over 8 MiB makes the server drop the connection, so Put
//     refuses such values before sending (ErrTooLarge).
//   - Errors carry no "ERR " prefix; their exact texts map to kinds
//     ("No space left on this namespace" is ErrFull, "Access denied" is
//     ErrAuth, ...). An error text outside the reference is ErrCorruptReply.
//   - SCAN walks the namespace's index log with an opaque cursor and ends
//     with the error "No more data"; batch sizes are unpredictable. A key
//     overwritten while List runs may be reported twice.
//   - Capacity is NSINFO's data_limits_bytes minus data_size_bytes (live
//     payload bytes), bounded by the disk's free space; a namespace without a
//     maxsize reports the disk.
//
// The pool is a small one of its own rather than redigo's Pool so that a
// done ctx can cut a blocked read or write short on the caller's goroutine:
// redigo's DoContext returns early but leaves a goroutine still writing the
// caller's value, which the caller may already be reusing.
//
// RESP pairs replies with commands by order alone, so a server that sends
// one reply too many would shift every later answer on that connection by
// one (a GET returning another key's value). The reader that checks reply
// framing also counts replies and fails the command whose read brings one
// no command asked for, and before each command the socket must hold no
// unread bytes; either way the connection is dropped.
package zdb
