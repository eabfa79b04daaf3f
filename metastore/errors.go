package metastore

import (
	"errors"
	"fmt"
)

// Error kinds. Callers test them with errors.Is; implementations wrap them
// with context (the key, the directory, the endpoint).
var (
	// ErrNotFound: the key or record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the target of an operation that must not replace one
	// (RenameObjectNoReplace) exists. Nothing was written.
	ErrExists = errors.New("already exists")
	// ErrConflict: a batch condition failed (a compare-and-swap lost a
	// race, or a record changed since it was read). Nothing was written.
	ErrConflict = errors.New("conflict")
	// ErrClosed: the KV or Store was closed.
	ErrClosed = errors.New("metastore closed")
	// ErrSchema: the database was written by a newer healstore, or is not a
	// healstore metadata database at all.
	ErrSchema = errors.New("metadata schema")
	// ErrStop is returned by a Scan callback to end the walk early; Scan
	// then returns nil.
	ErrStop = errors.New("stop scan")
	// ErrUnavailable: the metadata service (etcd) could not be reached or
	// did not answer in time. Transient: the same call may succeed later.
	ErrUnavailable = errors.New("metastore unavailable")
	// ErrLocked: the metadata directory is held by another process.
	ErrLocked = errors.New("metadata directory in use")
	// ErrTooLarge: one batch exceeds what the KV accepts in one atomic
	// commit (etcd's --max-txn-ops or --max-request-bytes).
	ErrTooLarge = errors.New("batch too large")
	// ErrCorrupt: a stored record or key cannot be decoded.
	ErrCorrupt = errors.New("corrupt metadata record")
	// ErrInvalid: the caller passed something the metastore cannot store
	// (an empty key, a backend name with '/', a record without a name).
	ErrInvalid = errors.New("invalid argument")
	// ErrIntentLost: a commit named a write intent that no longer exists.
	// Garbage collection removes intents it judges abandoned (older than
	// its orphan delay) and deletes their shards, so committing would
	// reference shards that may be gone. Nothing was written; retrying the
	// same commit cannot succeed, the data must be written again. It
	// matches ErrConflict too.
	ErrIntentLost = fmt.Errorf("%w: write intent collected", ErrConflict)
)
