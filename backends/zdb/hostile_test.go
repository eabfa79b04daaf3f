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

// accepted is how many connections the fake server took.
func (h *hostile) accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// echo answers GET and SET with the key, as 0-db does for a SET and as a
// value that names the GET it answers.
func echo(words []string, c net.Conn) {
	c.Write([]byte(fmt.Sprintf("$%d\r\n%s\r\n", len(words[1]), words[1])))
}

// A second reply in the same packet as the first is refused as soon as
// the guard reads it: the command fails, naming the server and what was
// wrong, instead of the next command on the connection taking it.
func TestSurplusReplySamePacket(t *testing.T) {
	h := newHostile(t, func(words []string, c net.Conn) {
		if words[1] == "dup" {
			c.Write([]byte("$3\r\ndup\r\n$5\r\nother\r\n"))
			return
		}
		echo(words, c)
	})
	b := openHostile(t, h)
	addr := h.ln.Addr().String()
	v, err := b.Get(ctx5(t), "dup")
	if !errors.Is(err, backends.ErrCorruptReply) || v != nil {
		t.Fatalf("GET answered twice: %q, %v; want ErrCorruptReply and no value", v, err)
	}
	if msg := err.Error(); !strings.Contains(msg, addr) || !strings.Contains(msg, "a reply no command asked for") {
		t.Fatalf("error does not name the server %s and the surplus reply: %v", addr, err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if v, err := b.Get(ctx5(t), k); err != nil || string(v) != k {
			t.Fatalf("Get %s after a surplus reply: %q, %v", k, v, err)
		}
	}

	// The same on one connection, where the surplus is in the very read
	// that holds the reply, however the kernel splits packets.
	c := newConn(&replayConn{r: bytes.NewReader([]byte("$1\r\na\r\n$1\r\nb\r\n"))}, "zdb.example:9900")
	reply, err := c.do(ctx5(t), "GET", "a")
	if !errors.Is(err, errCorrupt) || reply != nil || !c.broken ||
		!strings.Contains(err.Error(), "0-db zdb.example:9900 sent a reply no command asked for") {
		t.Fatalf("two replies in one read: %q, %v, broken %v", reply, err, c.broken)
	}
}

// waitUnread waits until one of b's idle connections holds bytes no
// command has read.
func waitUnread(t *testing.T, b *Backend) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		b.pool.mu.Lock()
		for _, ic := range b.pool.idle {
			if ok, _ := unread(ic.c.nc.Conn); ok {
				found = true
			}
		}
		b.pool.mu.Unlock()
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the surplus reply never reached an idle connection")
		}
		time.Sleep(time.Millisecond)
	}
}

// A surplus reply that arrives after the command it followed returned sits
// in the socket of an idle connection. The next command must not take it
// as its answer (another key's value for a GET, an error for a SET that
// succeeded): the connection is dropped before reuse.
func TestSurplusReplyAfterReply(t *testing.T) {
	for name, surplus := range map[string]string{
		"stale value": "$5\r\nstale\r\n",
		"stale error": "-No space left on this namespace\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			h := newHostile(t, func(words []string, c net.Conn) {
				echo(words, c)
				if words[1] == "first" {
					<-release // Get has read its reply
					c.Write([]byte(surplus))
				}
			})
			b := openHostile(t, h)
			if v, err := b.Get(ctx5(t), "first"); err != nil || string(v) != "first" {
				t.Fatalf("Get first: %q, %v", v, err)
			}
			close(release)
			waitUnread(t, b)
			before := h.accepted()
			if v, err := b.Get(ctx5(t), "second"); err != nil || string(v) != "second" {
				t.Fatalf("Get after a surplus reply reached the idle connection: %q, %v", v, err)
			}
			if err := b.Put(ctx5(t), "third", []byte("x")); err != nil {
				t.Fatalf("Put after a surplus reply: %v", err)
			}
			if h.accepted() != before+1 {
				t.Fatalf("%d connections dialled after the surplus reply; want 1 replacing the dirty one", h.accepted()-before)
			}
		})
	}
}

// The checks must not cost well-behaved connections: many commands from
// concurrent callers, some with deadlines that pass while the connection
// is idle, all get their own answers on reused connections.
func TestPooledCommandsStillWork(t *testing.T) {
	h := newHostile(t, echo)
	b := openHostile(t, h)
	const workers, rounds = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				k := fmt.Sprintf("w%d-%d", w, i)
				ctx := context.Background()
				if i%2 == 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
				}
				if err := b.Put(ctx, k, []byte(k)); err != nil {
					errs <- fmt.Errorf("Put %s: %w", k, err)
					return
				}
				if v, err := b.Get(ctx, k); err != nil || string(v) != k {
					errs <- fmt.Errorf("Get %s: %q, %w", k, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A read deadline that passed while the connection sat idle must not
	// fail the check before the next command.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if v, err := b.Get(ctx, "short"); err != nil || string(v) != "short" {
		t.Fatalf("Get short: %q, %v", v, err)
	}
	<-ctx.Done()
	before := h.accepted()
	for i := 0; i < 3; i++ {
		if v, err := b.Get(context.Background(), "after"); err != nil || string(v) != "after" {
			t.Fatalf("Get after a deadline passed: %q, %v", v, err)
		}
	}
	if n := h.accepted(); n > workers || n != before {
		t.Fatalf("%d connections for %d callers, %d after the deadline passed: the check dropped good ones", n, workers, n-before)
	}
}
