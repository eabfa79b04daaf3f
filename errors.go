package healstore

import (
	"errors"
	"fmt"
	"strings"
)

// Errors callers test with errors.Is.
var (
	// ErrNotFound: no object under that name.
	ErrNotFound = errors.New("object not found")
	// ErrExists: the target name is taken (Rename onto an existing object).
	ErrExists = errors.New("object already exists")
	// ErrInsufficientBackends: too few usable backends in distinct failure
	// domains to place or read a stripe. The error is an
	// *InsufficientBackendsError saying how many were usable and needed.
	ErrInsufficientBackends = errors.New("insufficient backends")
	// ErrAuth: a sealed block did not open, or the master key does not
	// match the store: the wrong master key. Open's error also matches it
	// when etcd refuses the configured user ([metastore] username and
	// password_file, or none on a cluster with authentication); that
	// error's text says so.
	ErrAuth = errors.New("authentication failed (wrong master key?)")
	// ErrClosed: the Store, Reader or Writer was closed.
	ErrClosed = errors.New("closed")
	// ErrAborted: the Writer was aborted; nothing was committed.
	ErrAborted = errors.New("write aborted")
)

// InsufficientBackendsError says an operation needed more usable backends
// (in distinct failure domains at the placement level) than it had.
type InsufficientBackendsError struct {
	// Op is what failed: "open", "write" or "read".
	Op string
	// Usable and Needed count failure domains (for a write: shards that
	// could be placed or landed, against the policy or the write quorum).
	Usable, Needed int
	// Detail names what is missing or what failed; it never holds a secret.
	Detail string
}

func (e *InsufficientBackendsError) Error() string {
	s := fmt.Sprintf("%s: insufficient backends: %d usable, %d needed", e.Op, e.Usable, e.Needed)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, ErrInsufficientBackends) true.
func (e *InsufficientBackendsError) Is(target error) bool { return target == ErrInsufficientBackends }

// joinLimited lists up to n items and says how many more there were.
func joinLimited(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}
