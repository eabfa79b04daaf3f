// Package local is the directory backend: each value is one file.
//
// Layout: <path>/data/<xx>/<name>, where xx is two hex digits of a hash of
// the key (256 fan-out directories, so millions of shards never sit in one
// directory) and name is the key with '/' written as '+' (and a leading '='
// when the key starts with '.', so no key can become ".", ".." or look like
// a temporary file). '+' and '=' are outside the key alphabet, so the
// mapping is reversible and List needs no side index.
//
// Put writes a temporary file in the same directory, fsyncs it, renames it
// over the real name and fsyncs the directory: after a crash a key holds the
// old value or the new one, never a torn one. Left-over temporary files
// (".tmp-*") are removed by Open.
//
// PutNoSync (backends.Syncer) skips both fsyncs, only starting the file's
// write-back (sync_file_range(2), no wait); Sync then makes every value
// written so far durable in one round of fsyncs of their files and
// directories, all submitted at once through Linux AIO (so they run in
// parallel in the kernel, not two at a time on a 2-core machine's
// goroutines), shared by concurrent callers. Until then a crash of the
// machine may leave such a value missing or torn; healstore's write path
// writes its intent first and syncs before its metadata commit, and reads
// verify every shard.
//
// Capacity comes from statfs of the file system, or from Spec.Quota when one
// is set; the quota is enforced (a Put that would pass it fails with
// ErrFull), as is a full disk (ENOSPC, EDQUOT).
package local
