package zdbtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawConn speaks RESP by hand so the tests see the exact reply bytes.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dial(t *testing.T, s *Server) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// readReply returns the raw bytes of one reply.
func readReply(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return line, err
	}
	switch line[0] {
	case '+', '-', ':':
		return line, nil
	case '$':
		n, _ := strconv.Atoi(strings.TrimSpace(string(line[1:])))
		if n < 0 {
			return line, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return append(line, buf...), nil
	case '*':
		n, _ := strconv.Atoi(strings.TrimSpace(string(line[1:])))
		out := line
		for i := 0; i < n; i++ {
			el, err := readReply(r)
			if err != nil {
				return nil, err
			}
			out = append(out, el...)
		}
		return out, nil
	}
	return line, fmt.Errorf("not RESP: %q", line)
}

func (c *rawConn) do(args ...string) string {
	c.t.Helper()
	var bs [][]byte
	for _, a := range args {
		bs = append(bs, []byte(a))
	}
	if _, err := c.nc.Write(EncodeRequest(bs...)); err != nil {
		c.t.Fatalf("write %q: %v", args, err)
	}
	rep, err := readReply(c.r)
	if err != nil {
		c.t.Fatalf("reply to %q: %v", args, err)
	}
	return string(rep)
}

func (c *rawConn) expect(want string, args ...string) {
	c.t.Helper()
	if got := c.do(args...); got != want {
		c.t.Fatalf("%q: got %q, want %q", args, got, want)
	}
}

// closed checks that the server closed the connection.
func (c *rawConn) closed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		c.t.Fatalf("connection still open, read %q", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("connection still open (read timed out)")
	}
}

func TestDataCommands(t *testing.T) {
	s := New(t, Options{AdminPassword: "adminpass"})
	c := dial(t, s)
	c.expect("+PONG\r\n", "PING")
	c.expect("+PONG\r\n", "PING", "extra", "args")
	c.expect("$2\r\nk1\r\n", "SET", "k1", "v1")
	c.expect("$-1\r\n", "SET", "k1", "v1")
	c.expect("$2\r\nk1\r\n", "SET", "k1", "v2")
	c.expect("$2\r\nv2\r\n", "GET", "k1")
	c.expect("-Invalid argument, key needed\r\n", "SET", "", "v")
	c.expect("-Unexpected arguments\r\n", "SET", "k")
	c.expect("-Unexpected arguments\r\n", "SET", "k", "v", "x", "y")
	c.expect("-Permission denied\r\n", "SET", "k", "v", "1700000000")
	c.expect("$1\r\nk\r\n", "SET", "k", "")
	c.expect("$0\r\n\r\n", "GET", "k")
	c.expect(":1\r\n", "EXISTS", "k")
	c.expect(":0\r\n", "LENGTH", "k")
	c.expect(":1\r\n", "CHECK", "k")
	c.expect("$-1\r\n", "GET", "missing")
	c.expect("-Unexpected arguments\r\n", "GET")
	c.expect("-Invalid argument\r\n", "GET", "")
	c.expect("*3\r\n$0\r\n\r\n$-1\r\n$2\r\nv2\r\n", "MGET", "k", "nope", "k1")
	c.expect("-Invalid arguments\r\n", "MGET")
	c.expect(":0\r\n", "EXISTS", "missing")
	c.expect("-Unexpected arguments\r\n", "EXISTS", "a", "b")
	c.expect("$-1\r\n", "CHECK", "missing")
	c.expect("$-1\r\n", "LENGTH", "missing")
	c.expect("$-1\r\n", "KEYTIME", "missing")
	c.expect(":2\r\n", "LENGTH", "k1")
	c.expect(":2\r\n", "DBSIZE")
	c.expect("+OK\r\n", "DEL", "k1")
	c.expect("-Key not found\r\n", "DEL", "k1")
	c.expect("$-1\r\n", "GET", "k1")
	c.expect(":1\r\n", "DBSIZE")
	c.expect("-Key not found\r\n", "KEYCUR", "k1")
	// Binary keys and values.
	bin := "\x00\r\n\xff$-1\r\n"
	c.expect("$"+strconv.Itoa(len(bin))+"\r\n"+bin+"\r\n", "SET", bin, bin)
	c.expect("$"+strconv.Itoa(len(bin))+"\r\n"+bin+"\r\n", "GET", bin)
	// Key length limits.
	long := strings.Repeat("k", 256)
	c.expect("-Key too large\r\n", "SET", long, "v")
	c.expect("-Invalid key\r\n", "GET", long)
	c.expect("-Invalid key\r\n", "EXISTS", long)
	c.expect("-Invalid key\r\n", "DEL", long)
	ok255 := strings.Repeat("k", 255)
	c.expect("$255\r\n"+ok255+"\r\n", "SET", ok255, "v")
	// Prefix matching and unknown commands.
	c.expect("$-1\r\n", "GE", "x")
	c.expect("$-1\r\n", "get", "x")
	c.expect("-Command not supported\r\n", "FOO")
	c.expect("-Command not supported\r\n", "HELLO", "3")
	c.expect("-Command not supported\r\n", "CLIENT", "SETINFO", "LIB-NAME", "x")
	c.expect("-Namespace not found\r\n", "SELECT", "0")
	c.expect("-Command disabled in release code, not yet available\r\n", "KSCAN", "x")
	c.expect("-Unauthorized\r\n", "STOP")
	c.expect("-Flushing public namespace denied\r\n", "FLUSH")
	c.expect("+PONG\r\n", "PING") // still usable after all those errors
	if rep := c.do("TIME"); !strings.HasPrefix(rep, "*2\r\n$10\r\n") {
		t.Fatalf("TIME: %q", rep)
	}
	if rep := c.do("INFO"); !strings.Contains(rep, "# server\n") || !strings.Contains(rep, "sequential_key_size: 8\n") {
		t.Fatalf("INFO: %q", rep)
	}
}

func TestAdminTimestampSet(t *testing.T) {
	s := New(t, Options{AdminPassword: "adminpass"})
	c := dial(t, s)
	c.expect("+OK\r\n", "AUTH", "adminpass")
	c.expect("$1\r\nk\r\n", "SET", "k", "v", "1700000000")
	c.expect(":1700000000\r\n", "KEYTIME", "k")
}

func TestFraming(t *testing.T) {
	s := New(t, Options{})
	c := dial(t, s)
	c.nc.Write([]byte("PING\r\n"))
	rep, _ := readReply(c.r)
	if string(rep) != "-Malformed request, array expected\r\n" {
		t.Fatalf("inline command: %q", rep)
	}
	c.closed()

	// Exactly 8 MiB is accepted.
	c = dial(t, s)
	big := bytes.Repeat([]byte{'x'}, MaxPayload)
	c.nc.Write(EncodeRequest([]byte("SET"), []byte("big"), big))
	rep, err := readReply(c.r)
	if err != nil || string(rep) != "$3\r\nbig\r\n" {
		t.Fatalf("SET of 8 MiB: %q, %v", rep, err)
	}
	// One byte more is refused as soon as the header arrives, and the
	// connection is closed.
	c.nc.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$8388609\r\n"))
	rep, err = readReply(c.r)
	if err != nil || string(rep) != "-Payload too big\r\n" {
		t.Fatalf("SET of 8 MiB+1: %q, %v", rep, err)
	}
	c.closed()

	// Pipelined commands get their replies in order.
	c = dial(t, s)
	var pipe []byte
	pipe = append(pipe, EncodeRequest([]byte("SET"), []byte("a"), []byte("1"))...)
	pipe = append(pipe, EncodeRequest([]byte("GET"), []byte("a"))...)
	pipe = append(pipe, EncodeRequest([]byte("PING"))...)
	c.nc.Write(pipe)
	var got []string
	for i := 0; i < 3; i++ {
		rep, err := readReply(c.r)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(rep))
	}
	if strings.Join(got, "") != "$1\r\na\r\n$1\r\n1\r\n+PONG\r\n" {
		t.Fatalf("pipeline: %q", got)
	}

	for _, bad := range []struct{ req, reply string }{
		{"*0\r\n", "-Missing arguments\r\n"},
		{"*1\r\n+PING\r\n", "-Malformed query string\r\n"},
		{"*1025\r\n", "-Too many arguments\r\n"},
	} {
		c = dial(t, s)
		c.nc.Write([]byte(bad.req))
		rep, _ := readReply(c.r)
		if string(rep) != bad.reply {
			t.Fatalf("%q: got %q, want %q", bad.req, rep, bad.reply)
		}
		c.closed()
	}
}

func TestAuth(t *testing.T) {
	s := New(t, Options{AdminPassword: "adminpass"})
	c := dial(t, s)
	c.expect("-Permission denied\r\n", "NSNEW", "ns1")
	c.expect("-Access denied\r\n", "AUTH", "wrong")
	c.expect("-Unexpected arguments\r\n", "AUTH")
	c.expect("-Unexpected arguments\r\n", "AUTH", "a", "b", "c")
	c.expect("-Password too long\r\n", "AUTH", strings.Repeat("p", 129))
	c.expect("-No CHALLENGE requested, secure authentication not available\r\n", "AUTH", "SECURE", strings.Repeat("0", 40))
	c.expect("-Only SECURE extra method supported\r\n", "AUTH", "FOO", "x")
	ch := c.do("AUTH", "SECURE", "CHALLENGE")
	if len(ch) != 1+16+2 || ch[0] != '+' {
		t.Fatalf("challenge: %q", ch)
	}
	c.expect("-Invalid hash length\r\n", "AUTH", "SECURE", "abc")
	c.expect("-Access denied\r\n", "AUTH", "SECURE", sha1Hex(ch[1:17], "wrong"))
	// The challenge was used up by the failed attempt.
	c.expect("-No CHALLENGE requested, secure authentication not available\r\n", "AUTH", "SECURE", sha1Hex(ch[1:17], "adminpass"))
	ch = c.do("AUTH", "SECURE", "CHALLENGE")
	c.expect("+OK\r\n", "AUTH", "SECURE", sha1Hex(ch[1:17], "adminpass"))
	c.expect("+OK\r\n", "NSNEW", "ns1")
	c.expect("+OK\r\n", "AUTH", "adminpass")
	c.expect("+OK\r\n", "AUTH", "adminpass")

	open := New(t, Options{})
	c = dial(t, open)
	c.expect("-Authentication disabled\r\n", "AUTH", "anything")
	c.expect("+OK\r\n", "NSNEW", "ns1") // every client is admin
}

func TestNamespaces(t *testing.T) {
	s := New(t, Options{AdminPassword: "adminpass"})
	a := dial(t, s)
	a.expect("+OK\r\n", "AUTH", "adminpass")
	a.expect("+OK\r\n", "NSNEW", "ns1")
	a.expect("-This namespace is not available\r\n", "NSNEW", "ns1")
	for _, bad := range []string{"default", "a/b", ".", ".."} {
		a.expect("-This name is not allowed\r\n", "NSNEW", bad)
	}
	a.expect("-Namespace too long\r\n", "NSNEW", strings.Repeat("n", 129))
	a.expect("+OK\r\n", "NSNEW", strings.Repeat("n", 128))
	a.expect("-Invalid argument\r\n", "NSNEW", "")
	a.expect("*3\r\n$7\r\ndefault\r\n$3\r\nns1\r\n$128\r\n"+strings.Repeat("n", 128)+"\r\n", "NSLIST")
	a.expect("+OK\r\n", "NSDEL", strings.Repeat("n", 128))
	a.expect("-Cannot remove default namespace\r\n", "NSDEL", "default")
	a.expect("-This namespace doesn't exists\r\n", "NSDEL", "missing")
	a.expect("-Namespace not found\r\n", "NSINFO", "missing")
	a.expect("-Namespace not found\r\n", "NSSET", "missing", "maxsize", "1")
	a.expect("-Cannot update default namespace\r\n", "NSSET", "default", "password", "x")
	a.expect("-Invalid property\r\n", "NSSET", "ns1", "bogus", "1")
	a.expect("-Unexpected arguments\r\n", "NSSET", "ns1", "maxsize")
	a.expect("-Argument too long\r\n", "NSSET", "ns1", "password", strings.Repeat("p", 64))
	a.expect("-Invalid property value (expected: user, seq)\r\n", "NSSET", "ns1", "mode", "bogus")
	a.expect("+OK\r\n", "NSSET", "ns1", "password", "secret1")
	a.expect("+OK\r\n", "NSSET", "ns1", "public", "0")

	// A new namespace with a password and public 0.
	b := dial(t, s)
	b.expect("-Namespace protected and private\r\n", "SELECT", "ns1")
	b.expect("-Access denied\r\n", "SELECT", "ns1", "wrong")
	b.expect("-Namespace not found\r\n", "SELECT", "missing")
	b.expect("-Invalid argument\r\n", "SELECT")
	b.expect("-Too many arguments\r\n", "SELECT", "ns1", "a", "b", "c")
	b.expect("-Only SECURE extra method supported\r\n", "SELECT", "ns1", "FOO", "x")
	b.expect("-No CHALLENGE requested, secure authentication not available\r\n", "SELECT", "ns1", "SECURE", strings.Repeat("0", 40))
	b.expect(":0\r\n", "DBSIZE") // still in default after the failures
	ch := b.do("AUTH", "SECURE", "CHALLENGE")
	b.expect("+OK\r\n", "SELECT", "ns1", "SECURE", sha1Hex(ch[1:17], "secret1"))
	b.expect("$1\r\nk\r\n", "SET", "k", "value")
	b.expect(":1\r\n", "DBSIZE")
	c := dial(t, s)
	c.expect("+OK\r\n", "SELECT", "ns1", "secret1")
	c.expect("$5\r\nvalue\r\n", "GET", "k")

	// An admin still needs the namespace password.
	a.expect("-Namespace protected and private\r\n", "SELECT", "ns1")

	// Public with a password: read-only without it.
	a.expect("+OK\r\n", "NSSET", "ns1", "public", "1")
	d := dial(t, s)
	d.expect("+OK\r\n", "SELECT", "ns1")
	d.expect("$5\r\nvalue\r\n", "GET", "k")
	d.expect("-Namespace is in read-only mode\r\n", "SET", "k", "x")
	d.expect("-Namespace is in read-only mode\r\n", "DEL", "k")

	// No password: any password given is ignored.
	a.expect("+OK\r\n", "NSNEW", "open")
	d.expect("+OK\r\n", "SELECT", "open", "anything")
	d.expect("$1\r\nk\r\n", "SET", "k", "v")

	info := a.do("NSINFO", "ns1")
	for _, want := range []string{"# namespace\nname: ns1\nentries: 1\npublic: yes\nworm: no\nlocked: no\npassword: yes\ndata_size_bytes: 5\n",
		"data_limits_bytes: 0\n", "mode: userkey\n", "data_disk_freespace_bytes: ", "data_path: "} {
		if !strings.Contains(info, want) {
			t.Fatalf("NSINFO lacks %q:\n%s", want, info)
		}
	}
	if strings.Contains(d.do("NSINFO", "ns1"), "data_path") {
		t.Fatal("NSINFO shows paths to a non-admin")
	}

	// Deleting a namespace another client uses drops that client.
	a.expect("+OK\r\n", "NSNEW", "mine")
	a.expect("+OK\r\n", "SELECT", "mine")
	a.expect("-Cannot remove namespace you're currently using.\r\n", "NSDEL", "mine")
	a.expect("+OK\r\n", "NSDEL", "ns1")
	c.expect("-Your active namespace is not available anymore (probably removed).\r\n", "PING")
	c.closed()
}

func TestMaxsize(t *testing.T) {
	s := New(t, Options{})
	c := dial(t, s)
	c.expect("+OK\r\n", "NSNEW", "ns")
	c.expect("+OK\r\n", "NSSET", "ns", "maxsize", "100")
	c.expect("+OK\r\n", "SELECT", "ns")
	v50 := strings.Repeat("a", 50)
	c.expect("$1\r\na\r\n", "SET", "a", v50)
	c.expect("$1\r\nb\r\n", "SET", "b", v50)
	c.expect("-No space left on this namespace\r\n", "SET", "c", "z")
	c.expect("$1\r\na\r\n", "SET", "a", strings.Repeat("b", 40))
	c.expect("$1\r\nd\r\n", "SET", "d", strings.Repeat("d", 10))
	info := c.do("NSINFO", "ns")
	if !strings.Contains(info, "data_size_bytes: 100\n") || !strings.Contains(info, "data_limits_bytes: 100\n") || !strings.Contains(info, "space_available: 0\n") {
		t.Fatalf("NSINFO of a full namespace:\n%s", info)
	}
	c.expect("+OK\r\n", "NSSET", "ns", "maxsize", "abc") // becomes 0: unlimited
	c.expect("$1\r\nc\r\n", "SET", "c", "z")
}

func TestModesAndFlags(t *testing.T) {
	s := New(t, Options{})
	c := dial(t, s)
	c.expect("+OK\r\n", "NSNEW", "seq")
	c.expect("+OK\r\n", "NSSET", "seq", "mode", "seq")
	c.expect("+OK\r\n", "SELECT", "seq")
	id := func(n uint64) string {
		b := make([]byte, 8)
		b[0] = byte(n)
		return string(b)
	}
	c.expect("$8\r\n"+id(0)+"\r\n", "SET", "", "first")
	c.expect("$8\r\n"+id(0)+"\r\n", "SET", id(0), "first2")
	c.expect("$-1\r\n", "SET", id(0), "first2")
	c.expect("$8\r\n"+id(2)+"\r\n", "SET", "", "b")
	c.expect("-Invalid key, only update authorized\r\n", "SET", "user", "v")
	c.expect("-Invalid key, only update authorized\r\n", "SET", id(1), "v")
	c.expect("$6\r\nfirst2\r\n", "GET", id(0))
	c.expect("$-1\r\n", "GET", "abcd")
	c.expect("-Cannot change mode of used namespace\r\n", "NSSET", "seq", "mode", "user")

	c.expect("+OK\r\n", "NSNEW", "w")
	c.expect("+OK\r\n", "SELECT", "w")
	c.expect("$1\r\nk\r\n", "SET", "k", "v")
	c.expect("+OK\r\n", "NSSET", "w", "worm", "1")
	c.expect("-Namespace is protected by worm mode\r\n", "SET", "k", "v")
	c.expect("-Cannot delete a key when namespace is in worm mode\r\n", "DEL", "k")
	c.expect("$2\r\nk2\r\n", "SET", "k2", "v")
	c.expect("+OK\r\n", "NSSET", "w", "worm", "0")
	c.expect("+OK\r\n", "NSSET", "w", "lock", "1")
	c.expect("$1\r\nv\r\n", "GET", "k")
	c.expect("-Namespace is temporarily locked (read-only)\r\n", "SET", "k", "x")
	c.expect("-Namespace is temporarily locked (read-only)\r\n", "DEL", "k")
	c.expect("+OK\r\n", "NSSET", "w", "lock", "0")
	c.expect("+OK\r\n", "NSSET", "w", "freeze", "1")
	frozen := "-Namespace is temporarily frozen (read-write disabled)\r\n"
	c.expect(frozen, "GET", "k")
	c.expect(frozen, "EXISTS", "k")
	c.expect(frozen, "SET", "k", "x")
	c.expect(frozen, "SCAN")
	c.expect(":2\r\n", "DBSIZE")
}

func TestProtect(t *testing.T) {
	s := New(t, Options{AdminPassword: "adminpass", Protect: true})
	c := dial(t, s)
	c.expect("+OK\r\n", "AUTH", "adminpass")
	c.expect("-Namespace is in read-only mode\r\n", "SET", "k", "v")
	c.expect("+OK\r\n", "SELECT", "default", "adminpass")
	c.expect("$1\r\nk\r\n", "SET", "k", "v")
}

// scanAll walks SCAN to the end and returns the keys in order.
func scanAll(t *testing.T, c *rawConn) []string {
	t.Helper()
	var keys []string
	args := []string{"SCAN"}
	for {
		c.nc.Write(EncodeRequest(toBytes(args)...))
		rep, err := readReply(c.r)
		if err != nil {
			t.Fatal(err)
		}
		if string(rep) == "-No more data\r\n" {
			return keys
		}
		r := bufio.NewReader(bytes.NewReader(rep))
		r.ReadString('\n') // *2
		r.ReadString('\n') // $17
		cur := make([]byte, 17+2)
		io.ReadFull(r, cur)
		hdr, _ := r.ReadString('\n')
		n, _ := strconv.Atoi(strings.TrimSpace(hdr[1:]))
		for i := 0; i < n; i++ {
			r.ReadString('\n') // *3
			kl, _ := r.ReadString('\n')
			l, _ := strconv.Atoi(strings.TrimSpace(kl[1:]))
			k := make([]byte, l+2)
			io.ReadFull(r, k)
			keys = append(keys, string(k[:l]))
			r.ReadString('\n') // size
			r.ReadString('\n') // ts
		}
		args = []string{"SCAN", string(cur[:17])}
	}
}

func toBytes(ss []string) [][]byte {
	var out [][]byte
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

func TestScan(t *testing.T) {
	s := New(t, Options{ScanBatch: 3})
	c := dial(t, s)
	c.expect("-No more data\r\n", "SCAN")
	c.expect("-Invalid key format\r\n", "SCAN", "garbage")
	for i := 0; i < 10; i++ {
		c.do("SET", fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	c.expect("$2\r\nk3\r\n", "SET", "k3", "new")
	c.expect("+OK\r\n", "DEL", "k5")
	got := scanAll(t, c)
	want := "k0 k1 k2 k4 k6 k7 k8 k9 k3"
	if strings.Join(got, " ") != want {
		t.Fatalf("SCAN order %v, want %s (log order, deleted and replaced entries skipped)", got, want)
	}
	// A cursor from KEYCUR starts after that key.
	cur := c.do("KEYCUR", "k7")
	if !strings.HasPrefix(cur, "$17\r\n") {
		t.Fatalf("KEYCUR: %q", cur)
	}
	rep := c.do("SCAN", cur[5:22])
	if !strings.HasPrefix(rep, "*2\r\n$17\r\n") || !strings.Contains(rep, "\r\n*3\r\n*3\r\n$2\r\nk8\r\n:1\r\n") {
		t.Fatalf("SCAN after k7: %q", rep)
	}
	rep = c.do("RSCAN", cur[5:22])
	if !strings.Contains(rep, "*3\r\n*3\r\n$2\r\nk6\r\n") {
		t.Fatalf("RSCAN before k7: %q", rep)
	}
	// A cursor that no longer matches the log is refused.
	c.expect("$2\r\nk7\r\n", "SET", "k7", "changed")
	c.expect("-Invalid key format\r\n", "SCAN", cur[5:22][:16]+"x")
}

func TestMisbehaviour(t *testing.T) {
	s := New(t, Options{})
	c := dial(t, s)
	c.expect("$1\r\nk\r\n", "SET", "k", "v")

	s.Fail("set", "Cannot write data right now")
	c.expect("-Cannot write data right now\r\n", "SET", "k", "x")
	c.expect("$1\r\nv\r\n", "GET", "k")
	s.Fail("SET", "")
	c.expect("$1\r\nk\r\n", "SET", "k", "w")

	s.Garble("GET", true)
	c.nc.Write(EncodeRequest([]byte("GET"), []byte("k")))
	if line, _ := c.r.ReadString('\n'); line != "?this is not RESP\r\n" {
		t.Fatalf("garbled GET answered %q", line)
	}
	s.Garble("GET", false)
	c = dial(t, s)

	s.SetDelay(200 * time.Millisecond)
	start := time.Now()
	c.expect("+PONG\r\n", "PING")
	if time.Since(start) < 200*time.Millisecond {
		t.Fatal("SetDelay did not delay")
	}
	s.SetDelay(0)

	s.SetHang(true)
	c.nc.Write(EncodeRequest([]byte("PING")))
	c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("a hanging server answered")
	}
	s.SetHang(false)

	// A round trip first, so the server has the connection on its books
	// (a dial returns before the server's Accept does).
	c = dial(t, s)
	c.expect("+PONG\r\n", "PING")
	s.DropConnections()
	c.closed()

	c = dial(t, s)
	c.expect("+PONG\r\n", "PING")
	s.Stop()
	c.closed()
	if nc, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		nc.Close()
		t.Fatal("a stopped server accepted a connection")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	c = dial(t, s)
	c.expect("$1\r\nw\r\n", "GET", "k")

	if err := s.CreateNamespace("small", "pw", 0); err != nil {
		t.Fatal(err)
	}
	c.expect("+OK\r\n", "SELECT", "small", "pw")
	c.expect("$1\r\na\r\n", "SET", "a", "12345")
	if err := s.FillUp("small"); err != nil {
		t.Fatal(err)
	}
	c.expect("-No space left on this namespace\r\n", "SET", "b", "1")
	c.expect("$1\r\na\r\n", "SET", "a", "54321") // same size: still fits
	if info, _ := s.Namespace("small"); info.Entries != 1 || info.DataSize != 5 || info.MaxSize != 5 {
		t.Fatalf("Namespace: %+v", info)
	}
}
