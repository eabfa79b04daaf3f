// Package fuse mounts a healstore as a POSIX filesystem (go-fuse v2).
//
// Directories, inodes and directory entries live in the store's metastore,
// in a namespaced area (Store.FSMeta) changed with atomic, compare-and-swap
// batches. File data lives in healstore objects, one per file block
// ("fs/<name>/<inode>/<block>"), so a small random write rewrites one
// block, copy-on-write: the store replaces the object and sends the old
// stripes to garbage collection.
//
// Writes land in a write-back cache on local disk (a file per dirty block
// plus a journal) and return at local-disk speed; an uploader sends full
// blocks at once and partial ones after a short delay or under cache
// pressure. fsync and close return only when the file's data and size are
// in healstore. A mount process that dies leaves the cache and journal
// behind; the next mount on the same boot uploads them (replay). Reads
// fetch only the blocks they touch, with read-ahead for sequential readers
// and a bounded in-memory block cache. Every call into the store is
// bounded by a timeout, so a stuck backend fails a request with EIO rather
// than hanging it.
//
// docs/fuse.md is the user guide: mounting at boot, consistency, the cache.
package fuse
