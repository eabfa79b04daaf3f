package zdb

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/gomodule/redigo/redis"
	"github.com/healstore/healstore/backends"
)

// replyKinds maps 0-db's exact error texts (no "ERR " prefix) to kinds.
var replyKinds = map[string]error{
	"No space left on this namespace": backends.ErrFull,

	"Access denied":                   backends.ErrAuth,
	"Namespace protected and private": backends.ErrAuth,
	"Permission denied":               backends.ErrAuth,
	// A public namespace selected without its password is read-only: the
	// credentials are missing, not the server.
	"Namespace is in read-only mode":                              backends.ErrAuth,
	"No CHALLENGE requested, secure authentication not available": backends.ErrAuth,
	"Invalid hash length":                                         backends.ErrAuth,
	"Password too long":                                           backends.ErrAuth,
	"Only SECURE extra method supported":                          backends.ErrAuth,
	"Namespace is protected by worm mode":                         backends.ErrAuth,
	"Cannot delete a key when namespace is in worm mode":          backends.ErrAuth,

	// The namespace is gone (deleted, server redeployed) or paused: the
	// data cannot be reached now; the healer decides after a grace period.
	"Namespace not found": backends.ErrUnavailable,
	"Your active namespace is not available anymore (probably removed).": backends.ErrUnavailable,
	"Namespace is temporarily locked (read-only)":                        backends.ErrUnavailable,
	"Namespace is temporarily frozen (read-write disabled)":              backends.ErrUnavailable,
	"Cannot write data right now":                                        backends.ErrUnavailable,
	"Cannot write index right now":                                       backends.ErrUnavailable,
	"Internal Error":                                                     backends.ErrUnavailable,
	"Timeout":                                                            backends.ErrUnavailable,

	"Payload too big": backends.ErrTooLarge,
	"Key too large":   backends.ErrInvalidKey,
	"Invalid key":     backends.ErrInvalidKey,
	"Key not found":   backends.ErrNotFound,
}

// errCorrupt marks a reply of the wrong shape.
var errCorrupt = errors.New("unexpected reply")

// kindOf classifies an error from a command.
func kindOf(err error) error {
	var re redis.Error
	switch {
	case errors.As(err, &re):
		if k, ok := replyKinds[string(re)]; ok {
			return k
		}
		return backends.ErrCorruptReply
	case errors.Is(err, errCorrupt):
		return backends.ErrCorruptReply
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, errPoolClosed):
		return backends.ErrUnavailable
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) {
		return backends.ErrUnavailable
	}
	// redigo's protocol errors ("redigo: bad response line terminator",
	// ...) are unexported; they are the one other thing it returns.
	if strings.HasPrefix(err.Error(), "redigo: ") {
		return backends.ErrCorruptReply
	}
	return backends.ErrUnavailable
}
