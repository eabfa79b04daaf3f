package zdb

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// replayConn is a server that answers with fixed bytes and swallows writes.
type replayConn struct {
	net.Conn // nil: only the methods below are used
	r        *bytes.Reader
	max      int // bytes one Read returns at most; 0 for no limit
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.max > 0 && len(p) > c.max {
		p = p[:c.max]
	}
	return c.r.Read(p)
}
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzGuard feeds arbitrary server bytes through the guard to redigo: no
// panic, and nothing the guard lets through holds a bulk string over
// MaxValueSize or arrays nested deeper than maxReplyDepth. The bytes come
// once in as few reads as possible, where a second reply in the read of
// the first must fail the command, and once a byte per read, where redigo
// reads no further than the reply it parses and the guard must agree with
// it where each reply ends.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{
		"$5\r\nhello\r\n", "$-1\r\n", "+OK\r\n", "-Key not found\r\n", ":42\r\n",
		"*2\r\n$3\r\ncur\r\n*1\r\n*3\r\n$1\r\nk\r\n:1\r\n:0\r\n",
		"$4611686018427387904\r\n", "*99999999999999999999\r\n", "*1\r\n*1\r\n*1\r\n:1\r\n",
		// Surplus replies: one more than asked for, in the same read.
		"$1\r\na\r\n$1\r\nb\r\n", "+OK\r\n+OK\r\n", "*1\r\n:1\r\n:2\r\n", "$0\r\n\r\n-ERR x\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		for _, max := range []int{0, 1} {
			g := &guardConn{deadlineConn: &deadlineConn{Conn: &replayConn{r: bytes.NewReader(reply), max: max}}}
			rc := redis.NewConn(g, 0, 0)
			for i := 0; i < 3; i++ {
				if err := g.expect("GET"); err != nil {
					t.Fatalf("reads of %d: guard refused command %d after redigo read a whole reply: %v", max, i, err)
				}
				v, err := rc.Do("GET", "k")
				if err != nil {
					break
				}
				if g.want != 0 {
					t.Fatalf("reads of %d: reply %d read, yet the guard still waits for it", max, i)
				}
				if d := depth(v); d > maxReplyDepth+1 {
					t.Fatalf("reads of %d: reply %d nested %d deep", max, i, d)
				}
			}
		}
	})
}

// depth is how deep v nests, failing on a bulk string over MaxValueSize.
func depth(v any) int {
	switch v := v.(type) {
	case []byte:
		if len(v) > MaxValueSize {
			panic("bulk string over MaxValueSize")
		}
	case []any:
		d := 0
		for _, e := range v {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 1
}
