package backends

import (
	"errors"
	"fmt"
)

// Error kinds. Callers test them with errors.Is.
var (
	// ErrNotFound: the key holds no value.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: transient; the backend could not be reached or did
	// not answer in time (refused, reset, timed out, closed, ctx done).
	ErrUnavailable = errors.New("unavailable")
	// ErrFull: the backend has no room for the value (quota, namespace
	// maxsize, disk full).
	ErrFull = errors.New("backend full")
	// ErrAuth: credentials were refused.
	ErrAuth = errors.New("authentication refused")
	// ErrTooLarge: the value exceeds what this backend takes in one value.
	ErrTooLarge = errors.New("value too large")
	// ErrCorruptReply: the backend answered with something that breaks its
	// protocol (truncated, malformed, unexpected type).
	ErrCorruptReply = errors.New("corrupt reply")
)

// Error is the error every backend returns. It names the backend, the
// operation and the key, and wraps one of the kinds above plus the cause.
// It must never carry a password or secret key.
type Error struct {
	Backend string
	Op      string
	Key     string
	Kind    error // one of the Err* sentinels
	Err     error // underlying cause, may be nil
}

func (e *Error) Error() string {
	s := "backend " + e.Backend + ": " + e.Op
	if e.Key != "" {
		s += " " + e.Key
	}
	s += ": " + e.Kind.Error()
	if e.Err != nil && e.Err != e.Kind {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap lets errors.Is match both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Errorf builds an *Error of the given kind with a formatted cause.
func Errorf(backend, op, key string, kind error, format string, args ...any) error {
	return &Error{Backend: backend, Op: op, Key: key, Kind: kind, Err: fmt.Errorf(format, args...)}
}

// Wrap builds an *Error of the given kind around cause.
func Wrap(backend, op, key string, kind, cause error) error {
	return &Error{Backend: backend, Op: op, Key: key, Kind: kind, Err: cause}
}
