package zdb

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// Limits on what one reply may declare. redigo trusts the server: it makes
// a slice of whatever length a "$n" or "*n" header says before reading a
// byte of it (2^62 panics the process; 2^40 exhausts memory), an int that
// overflows wraps around (a 20-digit bulk length reads as a nil reply: "not
// found"), and a status line is read to its end however long. The guard
// below sees the bytes before redigo does and fails the read first.
const (
	// maxReplyLine bounds a status, error or header line.
	maxReplyLine = 64 << 10
	// maxReplyAlloc bounds the memory one reply's headers may make
	// redigo allocate: a value of MaxValueSize (no bulk string may be
	// longer), or a SCAN batch with room to spare (0-db bounds a batch by
	// time, not count).
	maxReplyAlloc = 2 * MaxValueSize
	// maxReplyInt bounds an integer reply, keeping it well clear of the
	// int64 overflow redigo does not check.
	maxReplyInt = 1 << 62
	// sliceElem is what one element of an array reply costs redigo.
	sliceElem = 16
	// maxReplyDepth bounds arrays nested in arrays: redigo reads each
	// level by recursion, and a million "*1" levels (4 MB of reply) took
	// it ~200 MB of stack. 0-db nests 3 deep at most (SCAN).
	maxReplyDepth = 8
)

// guardConn checks the RESP framing of everything read from the server
// against the limits above, one header at a time, and fails the read (so
// redigo gives up on, and closes, the connection) at the first reply
// breaking them.
//
// It also counts replies. redigo pairs replies with commands by order
// alone, so one surplus reply from the server would answer the next
// command on the connection, and every command after it, with the reply
// meant for the one before (a GET returning another key's value). The
// guard fails the read at the first byte of a reply no command asked for,
// and expect refuses to send a command while the socket already holds
// bytes.
type guardConn struct {
	*deadlineConn
	addr string // the server, for errors

	want int // replies asked for and not yet begun

	skip    int64 // payload bytes of a bulk string still to pass through
	inLine  bool  // inside a line; typ is its first byte
	typ     byte
	lineLen int
	neg     bool
	digits  int
	val     int64
	bad     bool    // a non-digit in a length or integer
	open    []int64 // elements still to come in each array being read
	alloc   int64   // memory the current reply's headers declared
	err     error
}

func (g *guardConn) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.deadlineConn.Read(p)
	if cerr := g.check(p[:n]); cerr != nil {
		g.err = cerr
		return 0, cerr
	}
	return n, err
}

func (g *guardConn) check(p []byte) error {
	for i := 0; i < len(p); i++ {
		if g.skip > 0 {
			k := int64(len(p) - i)
			if k > g.skip {
				k = g.skip
			}
			g.skip -= k
			i += int(k) - 1
			continue
		}
		b := p[i]
		if !g.inLine {
			if len(g.open) == 0 { // a new reply
				if g.want == 0 {
					return fmt.Errorf("%w: 0-db %s sent a reply no command asked for", errCorrupt, g.addr)
				}
				g.want--
				g.alloc = 0
			}
			g.inLine, g.typ, g.lineLen = true, b, 0
			g.neg, g.digits, g.val, g.bad = false, 0, 0, false
			continue
		}
		g.lineLen++
		if g.lineLen > maxReplyLine {
			return fmt.Errorf("%w: reply line longer than %d bytes", errCorrupt, maxReplyLine)
		}
		if b == '\n' {
			g.inLine = false
			if err := g.header(); err != nil {
				return err
			}
			continue
		}
		if b == '\r' {
			continue
		}
		switch g.typ {
		case '$', '*', ':':
			switch {
			case b == '-' && g.lineLen == 1:
				g.neg = true
			case b >= '0' && b <= '9' && g.digits < 18: // 18 digits cannot overflow
				g.digits++
				g.val = g.val*10 + int64(b-'0')
			default:
				g.bad = true
			}
		}
	}
	return nil
}

// header checks a line just ended and accounts for what it declares.
func (g *guardConn) header() error {
	if n := len(g.open); n > 0 {
		g.open[n-1]--
	}
	defer func() {
		for n := len(g.open); n > 0 && g.open[n-1] == 0; n-- {
			g.open = g.open[:n-1]
		}
	}()
	if g.typ != '$' && g.typ != '*' && g.typ != ':' {
		return nil // status or error line; redigo checks the type byte
	}
	if g.bad || g.digits == 0 || g.val > maxReplyInt {
		return fmt.Errorf("%w: malformed or out of range number in a %q reply", errCorrupt, g.typ)
	}
	if g.typ == ':' {
		return nil
	}
	if g.neg {
		if g.val != 1 {
			return fmt.Errorf("%w: %q length -%d", errCorrupt, g.typ, g.val)
		}
		return nil // nil bulk or array
	}
	unit := int64(1)
	if g.typ == '*' {
		unit = sliceElem
	}
	// No 0-db value is larger than its largest argument. Divide, not
	// multiply: val*unit can overflow.
	if (g.typ == '$' && g.val > MaxValueSize) || g.val > (maxReplyAlloc-g.alloc)/unit {
		return fmt.Errorf("%w: %q length %d is more than a reply may hold", errCorrupt, g.typ, g.val)
	}
	g.alloc += g.val * unit
	if g.typ == '$' {
		g.skip = g.val + 2 // payload and its CRLF
	} else if g.val > 0 {
		if len(g.open) == maxReplyDepth {
			return fmt.Errorf("%w: arrays nested more than %d deep", errCorrupt, maxReplyDepth)
		}
		g.open = append(g.open, g.val)
	}
	return nil
}

// expect readies the guard for the reply to one command about to be sent.
// It fails if the server already sent something: a reply still being read,
// or bytes in the socket that no command asked for, which redigo would
// otherwise read as this command's answer. The read deadline must not have
// passed (the check is a read).
func (g *guardConn) expect(cmd string) error {
	if g.err != nil {
		return g.err
	}
	if g.want != 0 || g.inLine || g.skip > 0 || len(g.open) > 0 {
		return fmt.Errorf("%w: 0-db %s: a reply is still unread before %s", errCorrupt, g.addr, cmd)
	}
	waiting, err := unread(g.deadlineConn.Conn)
	if err != nil {
		return fmt.Errorf("0-db %s: checking the connection before %s: %w", g.addr, cmd, err)
	}
	if waiting {
		g.err = fmt.Errorf("%w: 0-db %s sent a reply no command asked for (unread before %s)", errCorrupt, g.addr, cmd)
		return g.err
	}
	g.want = 1
	return nil
}

// unread reports, without blocking or consuming anything, whether nc holds
// bytes not yet read, and fails with io.EOF if the server closed it. A conn
// without a file descriptor (a test's fake) has nothing to ask.
func unread(nc net.Conn) (bool, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	var n int
	var perr error
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		for {
			n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if perr != syscall.EINTR {
				return true // done, whatever the answer: never wait
			}
		}
	})
	switch {
	case err != nil:
		return false, err
	case errors.Is(perr, syscall.EAGAIN):
		return false, nil
	case perr != nil:
		return false, perr
	case n == 0:
		return false, io.EOF
	}
	return true, nil
}

var _ net.Conn = (*guardConn)(nil)
