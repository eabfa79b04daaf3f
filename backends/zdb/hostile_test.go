package zdb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// hostile is a fake 0-db: it answers SELECT with +OK and every other
// command with whatever reply returns for it (raw bytes, written as is).
type hostile struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// readCommand reads one RESP array of bulk strings and returns its words.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	var n int
	if _, err := fmtSscanf(line, "*%d\r\n", &n); err != nil {
		return nil, err
	}
	words := make([]string, 0, n)
	for i := 0; i < n; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		var l int
		if _, err := fmtSscanf(line, "$%d\r\n", &l); err != nil {
			return nil, err
		}
		buf := make([]byte, l+2)
		if _, err := ioReadFull(r, buf); err != nil {
			return nil, err
		}
		words = append(words, string(buf[:l]))
	}
	return words, nil
}

func newHostile(t *testing.T, reply func(words []string, w net.Conn)) *hostile {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{ln: ln}
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for _, c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					words, err := readCommand(r)
					if err != nil {
						return
					}
					if strings.EqualFold(words[0], "SELECT") {
						c.Write([]byte("+OK\r\n"))
						continue
					}
					reply(words, c)
				}
			}()
		}
	}()
	return h
}

func openHostile(t *testing.T, h *hostile) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := Open(ctx, spec(h.ln.Addr().String(), "ns"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// A bulk or array length no 0-db reply can have must fail the call as a
// corrupt reply, not panic in make, allocate it, or (for a length that
// overflows int) read as a nil "not found".
func TestHostileLengths(t *testing.T) {
	for _, r := range []string{
		"$4611686018427387904\r\n",  // 2^62
		"$99999999999999999999\r\n", // overflows int64
		"$9223372036854775808\r\n",  // 2^63: wraps negative
		"*4611686018427387904\r\n",  // array of 2^62
		"*18446744073709551617\r\n", // wraps to 1
		"*700000000000000000\r\n",   // times 16 overflowed the budget check
		"$-2\r\n",                   // negative other than -1
		"$16777216\r\n",             // 16 MiB: over MaxValueSize
	} {
		t.Run(strings.TrimSpace(r), func(t *testing.T) {
			h := newHostile(t, func(words []string, c net.Conn) { c.Write([]byte(r)) })
			b := openHostile(t, h)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			v, err := b.Get(ctx, "k")
			if !errors.Is(err, backends.ErrCorruptReply) {
				t.Fatalf("GET answered %q: %d bytes, %v; want ErrCorruptReply", r, len(v), err)
			}
		})
	}
}

var (
	fmtSscanf  = fmt.Sscanf
	ioReadFull = io.ReadFull
)

// Replies that declare little each but much together, or never end a line,
// must fail as corrupt before redigo allocates for them.
func TestHostileReplyMemory(t *testing.T) {
	for name, r := range map[string]string{
		"nested arrays": "*65536\r\n" + strings.Repeat("*65536\r\n", 64),
		"endless line":  "+" + strings.Repeat("a", 1<<20),
		"int overflow":  ":99999999999999999999\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			h := newHostile(t, func(words []string, c net.Conn) { c.Write([]byte(r)) })
			b := openHostile(t, h)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := b.Stat(ctx, "k")
			if !errors.Is(err, backends.ErrCorruptReply) {
				t.Fatalf("LENGTH answered %.20q...: %d, %v; want ErrCorruptReply", r, n, err)
			}
		})
	}
}

// The guard must follow framing however the bytes arrive: a value of the
// largest size, then one sent a byte at a time, both read back whole on
// the same connection.
func TestGuardPassesGoodReplies(t *testing.T) {
	big := bytes.Repeat([]byte{'x'}, MaxValueSize)
	h := newHostile(t, func(words []string, c net.Conn) {
		if words[0] == "GET" {
			c.Write([]byte(fmt.Sprintf("$%d\r\n%s\r\n", len(big), big)))
			return
		}
		for _, b := range []byte("*2\r\n$5\r\nhel\r\n\r\n:-1\r\n") {
			c.Write([]byte{b})
			time.Sleep(time.Millisecond)
		}
	})
	b := openHostile(t, h)
	ctx := ctx5(t)
	for i := 0; i < 2; i++ {
		v, err := b.Get(ctx, "big")
		if err != nil || !bytes.Equal(v, big) {
			t.Fatalf("Get of %d bytes: %d bytes, %v", len(big), len(v), err)
		}
		reply, err := b.pool.do(ctx, "SCAN")
		r, ok := reply.([]any)
		if err != nil || !ok || len(r) != 2 || string(r[0].([]byte)) != "hel\r\n" || r[1].(int64) != -1 {
			t.Fatalf("reply sent a byte at a time: %#v, %v", reply, err)
		}
	}
}

// A reply that comes after its command gave up must not be read as the
// answer to the next command on that connection: Get must never return
// another key's value.
func TestLateReplyNotReused(t *testing.T) {
	h := newHostile(t, func(words []string, c net.Conn) {
		if words[1] == "slow" {
			time.Sleep(300 * time.Millisecond)
		}
		c.Write([]byte(fmt.Sprintf("$%d\r\n%s\r\n", len(words[1]), words[1])))
	})
	b := openHostile(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := b.Get(ctx, "slow")
	cancel()
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Get past its deadline: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // the late reply is in the socket now
	for i := 0; i < 3; i++ {
		if v, err := b.Get(ctx5(t), "fast"); err != nil || string(v) != "fast" {
			t.Fatalf("Get after a late reply: %q, %v", v, err)
		}
	}
}

// A negative size is no size: LENGTH and SCAN answering one are corrupt.
func TestNegativeSizes(t *testing.T) {
	h := newHostile(t, func(words []string, c net.Conn) {
		if words[0] == "SCAN" {
			c.Write([]byte("*2\r\n$3\r\ncur\r\n*1\r\n*3\r\n$1\r\nk\r\n:-7\r\n:0\r\n"))
			return
		}
		c.Write([]byte(":-7\r\n"))
	})
	b := openHostile(t, h)
	if n, err := b.Stat(ctx5(t), "k"); !errors.Is(err, backends.ErrCorruptReply) {
		t.Fatalf("LENGTH answered -7: %d, %v", n, err)
	}
	err := b.List(ctx5(t), "", func(k string, n int64) error {
		t.Fatalf("SCAN entry %s of size %d", k, n)
		return nil
	})
	if !errors.Is(err, backends.ErrCorruptReply) {
		t.Fatalf("SCAN with a size of -7: %v", err)
	}
}

// A server that stops in the middle of a reply, or never starts one, holds
// a call no longer than its ctx: a deadline, or a cancel without one.
func TestStalledReplyEndsWithCtx(t *testing.T) {
	for name, r := range map[string]string{"mid-reply": "$10\r\nabc", "no reply": ""} {
		h := newHostile(t, func(words []string, c net.Conn) { c.Write([]byte(r)) })
		b := openHostile(t, h)
		for _, cancelOnly := range []bool{false, true} {
			var ctx context.Context
			var cancel context.CancelFunc
			if cancelOnly {
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(200*time.Millisecond, cancel)
			} else {
				ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
			}
			start := time.Now()
			_, err := b.Get(ctx, "k")
			cancel()
			if !errors.Is(err, backends.ErrUnavailable) || time.Since(start) > 2*time.Second {
				t.Fatalf("%s, cancel only %v: Get returned %v after %v", name, cancelOnly, err, time.Since(start))
			}
		}
	}
}

// Arrays nested deeper than any 0-db reply are refused before redigo
// recurses into them: a million levels took it ~200 MB of stack.
func TestDeepNestingRefused(t *testing.T) {
	r := strings.Repeat("*1\r\n", 100000) + ":1\r\n"
	h := newHostile(t, func(words []string, c net.Conn) { c.Write([]byte(r)) })
	b := openHostile(t, h)
	reply, err := b.pool.do(ctx5(t), "SCAN")
	if !errors.Is(err, errCorrupt) {
		t.Fatalf("100000 nested arrays: %T, %v", reply, err)
	}
	// The deepest real reply, SCAN's, still passes.
	h = newHostile(t, func(words []string, c net.Conn) {
		c.Write([]byte("*2\r\n$3\r\ncur\r\n*2\r\n*3\r\n$1\r\na\r\n:1\r\n:0\r\n*3\r\n$1\r\nb\r\n:2\r\n:0\r\n"))
	})
	b = openHostile(t, h)
	var keys []string
	err = b.List(ctx5(t), "", func(k string, n int64) error {
		keys = append(keys, k)
		if len(keys) == 4 {
			return errors.New("enough")
		}
		return nil
	})
	if len(keys) != 4 || keys[0] != "a" || keys[3] != "b" {
		t.Fatalf("List of SCAN replies: %v, %v", keys, err)
	}
}
