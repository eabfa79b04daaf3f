// Package zdbtest is a test double of a 0-db (zdb) server: an in-process
// TCP server that answers as the real 0-db v2.0.7 answered in the recorded
// protocol reference (shared reference zdb-protocol.md), byte for byte where
// the record has bytes.
//
// It is NOT 0-db and stores nothing on disk: values live in memory for the
// life of the Server (they survive Stop and Restart, as a real server's
// survive a restart). Use it to test clients; run the same tests against a
// real 0-db before trusting them (backends/zdb does, given HEALSTORE_ZDB_ADDR).
//
// What it models: RESP2 request framing (arrays of bulk strings only; an
// inline command gets "-Malformed request, array expected" and the
// connection is closed; an argument over 8 MiB gets "-Payload too big" as
// soon as its header arrives and the connection is closed); error replies
// without an "ERR " prefix; command names matched case-insensitively on a
// prefix of the table (so "GE" runs GET); keys of at most 255 bytes; user-key
// and sequential namespaces; NSNEW, NSDEL, NSSET (password, maxsize, public,
// worm, lock, freeze, mode), NSLIST, NSINFO, NSJUMP, SELECT (plain password
// and SECURE challenge), AUTH (plain and SECURE), PING, TIME, INFO, SET
// (the key echoed back, nil for an unchanged value, an admin timestamp),
// GET, MGET, DEL, EXISTS, CHECK, LENGTH, KEYTIME, KEYCUR, DBSIZE, SCAN,
// SCANX, RSCAN (opaque 17-byte cursors, batches of bounded size, "-No more
// data" at the end), FLUSH (a no-op that answers +OK, as v2.0.7 does), and
// namespace maxsize ("-No space left on this namespace").
//
// What it does not model: HISTORY, DATA, MIRROR/MASTER replication, hooks,
// and WAIT notifications (WAIT always ends in "-Timeout"); those reply
// "-Command not supported" where 0-db would do something. Behaviour the
// record does not show (for example what follows "-Too many arguments") is
// taken from reading the 0-db source and marked so in the code.
//
// It can misbehave on demand: delay every reply (SetDelay), swallow
// requests without answering (SetHang), drop every connection
// (DropConnections), answer chosen commands with an error or with bytes
// that break RESP (Fail, Garble), fill a namespace (FillUp), and stop and
// start again on the same port (Stop, Restart).
package zdbtest
