// Package local is the directory backend.
//
// Values of at most 1 MiB (packs.max) are appended to pack files:
// <path>/data/packs/<8 hex digits>.pack, one record per value on a 4 KiB
// boundary, a header with the key, the value's length and CRC-32C, and a
// sequence number (packrecord.go). Making a value durable then costs an
// fsync of one pack file, shared by every value a sync round covers, where
// a file of its own costs a new inode, a rename and fsyncs of the file and
// its directory. The index from key to record is in memory; Open reads
// the checkpoint of it the backend writes at Close and every
// max(1024, n/16) appends (packindex.go), then the headers of the records
// appended after it, or every header when there is none. Delete punches the record out of its pack
// (its space is free at once); a pack left empty is removed. A pack is
// appended to only by the instance that made it and holds its lock, so
// several instances (processes) can share a directory; each looks at the
// packs again when it meets a key it does not know (packs.go).
//
// Larger values get a file each: <path>/data/<xx>/<name>, where xx is two
// hex digits of a hash of the key (256 fan-out directories, so millions
// of shards never sit in one directory) and name is the key with '/'
// written as '+' (and a leading '=' when the key starts with '.', so no
// key can become ".", ".." or look like a temporary file). '+' and '=' are
// outside the key alphabet, so the mapping is reversible and List needs no
// side index. Put writes a temporary file in the same directory, fsyncs
// it, renames it over the real name and fsyncs the directory: after a
// crash a key holds the old value or the new one, never a torn one.
// Left-over temporary files (".tmp-*") are removed by Open. A packed
// record torn by a crash fails its checksum and reads as not found.
//
// PutNoSync (backends.Syncer) skips the fsyncs: a packed value is written
// with O_DIRECT (on the disk, not yet flushed), a file only has its
// write-back started (sync_file_range(2), no wait). Sync then makes every
// value written so far durable in one round of fsyncs of their packs,
// files and directories, all submitted at once through Linux AIO (so they
// run in parallel in the kernel, not two at a time on a 2-core machine's
// goroutines), shared by concurrent callers. Until then a crash of the
// machine may leave such a value missing or torn; healstore's write path
// writes its intent first and syncs before its metadata commit, and reads
// verify every shard.
//
// Capacity comes from statfs of the file system, or from Spec.Quota when one
// is set; the quota is enforced (a Put that would pass it fails with
// ErrFull), as is a full disk (ENOSPC, EDQUOT).
package local
