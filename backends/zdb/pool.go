package zdb

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/healstore/healstore/backends"
)

// deadlineConn lets a done ctx cut I/O short: once poisoned, every deadline
// set on it (redigo resets the read deadline on each command) is in the
// past, so a blocked read or write returns at once.
type deadlineConn struct {
	net.Conn
	mu       sync.Mutex
	poisoned bool
}

var past = time.Unix(1, 0)

func (d *deadlineConn) poison() {
	d.mu.Lock()
	d.poisoned = true
	d.Conn.SetDeadline(past)
	d.mu.Unlock()
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.poisoned {
		t = past
	}
	return d.Conn.SetDeadline(t)
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.poisoned {
		t = past
	}
	return d.Conn.SetReadDeadline(t)
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.poisoned {
		t = past
	}
	return d.Conn.SetWriteDeadline(t)
}

// conn is one pooled connection, already in the backend's namespace.
type conn struct {
	nc     *deadlineConn
	g      *guardConn
	rc     redis.Conn
	broken bool
}

// newConn wraps nc, a connection to the 0-db server at addr.
func newConn(nc net.Conn, addr string) *conn {
	dc := &deadlineConn{Conn: nc}
	g := &guardConn{deadlineConn: dc, addr: addr}
	// No redigo timeouts: deadlines come from ctx, per command. redigo
	// reads through the guard, which refuses replies no 0-db sends.
	return &conn{nc: dc, g: g, rc: redis.NewConn(g, 0, 0)}
}

// do runs one command bounded by ctx. A connection whose command failed at
// the transport level, or whose server sent a reply no command asked for,
// is marked broken and never reused.
func (c *conn) do(ctx context.Context, cmd string, args ...any) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, c.nc.poison)
	defer func() {
		if !stop() {
			// ctx ended while the command ran: the connection's
			// deadlines are poisoned for good, so it is not reusable.
			c.broken = true
		}
	}()
	// The read deadline too: the previous command's may have passed,
	// and expect reads the socket.
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	} else {
		c.nc.SetDeadline(time.Time{})
	}
	var reply any
	err := c.g.expect(cmd)
	if err == nil {
		reply, err = c.rc.(redis.ConnWithTimeout).DoWithTimeout(timeout, cmd, args...)
	}
	if err != nil {
		var re redis.Error
		if !errors.As(err, &re) {
			c.broken = true
		}
		// The socket deadline is ctx's deadline and can fire a moment
		// before ctx's own timer: backends.Ended counts that as ended, so
		// callers see DeadlineExceeded and pool.do does not retry.
		if cerr := backends.Ended(ctx); cerr != nil {
			err = errors.Join(cerr, err)
		}
	}
	return reply, err
}

func (c *conn) close() { c.rc.Close() }

// pool hands out at most size connections at once; idle ones are kept for
// reuse, newest first.
type pool struct {
	dial        func(ctx context.Context) (*conn, error)
	sem         chan struct{}
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   []idleConn
	closed bool
}

type idleConn struct {
	c     *conn
	since time.Time
}

func newPool(size int, idleTimeout time.Duration, dial func(ctx context.Context) (*conn, error)) *pool {
	return &pool{dial: dial, sem: make(chan struct{}, size), idleTimeout: idleTimeout}
}

var errPoolClosed = errors.New("backend is closed")

// get returns a connection and whether it was reused from the idle list.
func (p *pool) get(ctx context.Context) (*conn, bool, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		return nil, false, errPoolClosed
	}
	for len(p.idle) > 0 {
		ic := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if p.idleTimeout > 0 && time.Since(ic.since) > p.idleTimeout {
			ic.c.close()
			continue
		}
		p.mu.Unlock()
		return ic.c, true, nil
	}
	p.mu.Unlock()
	c, err := p.dial(ctx)
	if err != nil {
		<-p.sem
		return nil, false, err
	}
	return c, false, nil
}

func (p *pool) put(c *conn) {
	p.mu.Lock()
	if p.closed || c.broken || c.rc.Err() != nil {
		p.mu.Unlock()
		c.close()
	} else {
		p.idle = append(p.idle, idleConn{c, time.Now()})
		p.mu.Unlock()
	}
	<-p.sem
}

// flush closes every idle connection: after one died of a server restart,
// its siblings are dead too.
func (p *pool) flush() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		ic.c.close()
	}
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.flush()
}

// do runs a command on a pooled connection. A transport failure on a reused
// connection is retried once on a fresh one (every zdb command the backend
// sends is idempotent), so a server restart costs no failed call.
func (p *pool) do(ctx context.Context, cmd string, args ...any) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		reply, err := c.do(ctx, cmd, args...)
		broken := c.broken
		p.put(c)
		if err != nil && broken && reused && attempt == 0 && backends.Ended(ctx) == nil {
			p.flush()
			continue
		}
		return reply, err
	}
}
