package zdbtest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a Server. The zero value is a server without an admin
// password (every client is then admin, as 0-db without --admin).
type Options struct {
	// Addr to listen on; default "127.0.0.1:0" (a free loopback port).
	Addr string
	// AdminPassword is 0-db's --admin.
	AdminPassword string
	// Protect is 0-db's --protect: the default namespace is read-only
	// unless selected with the admin password.
	Protect bool
	// ScanBatch caps the entries of one SCAN reply (0-db cuts batches by
	// time, so clients must not assume a size); default 50.
	ScanBatch int
	// DiskFree is what NSINFO reports as free disk; default 100 GiB.
	DiskFree int64
}

// Server is a running test double. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	addr string

	mu       sync.Mutex // the state below; 0-db is single-threaded, so one lock
	ln       net.Listener
	conns    map[*client]struct{}
	nss      map[string]*namespace
	order    []string // namespace creation order, for NSLIST
	boot     time.Time
	clients  int64 // lifetime count
	commands int64
	delay    time.Duration
	hang     bool
	fail     map[string]string // command -> error reply
	garble   map[string]bool   // command -> reply bytes that break RESP
	stopped  bool
	closed   bool
	wg       sync.WaitGroup
}

// Start starts a server.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.ScanBatch <= 0 {
		opts.ScanBatch = 50
	}
	if opts.DiskFree <= 0 {
		opts.DiskFree = 100 << 30
	}
	s := &Server{
		opts:   opts,
		conns:  map[*client]struct{}{},
		nss:    map[string]*namespace{},
		boot:   time.Now(),
		fail:   map[string]string{},
		garble: map[string]bool{},
	}
	def := newNamespace("default")
	def.public = true
	s.nss["default"] = def
	s.order = append(s.order, "default")
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("zdbtest: listen %s: %w", opts.Addr, err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	return s, nil
}

// New starts a server for a test and stops it when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Addr is host:port of the server; it stays the same across Restart.
func (s *Server) Addr() string { return s.addr }

func (s *Server) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.stopped = false
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.stopped || s.closed {
				s.mu.Unlock()
				nc.Close()
				return
			}
			c := &client{s: s, nc: nc, ns: s.nss["default"], writable: !s.opts.Protect, admin: s.opts.AdminPassword == ""}
			s.conns[c] = struct{}{}
			s.clients++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				c.run()
			}()
		}
	}()
}

// Stop closes the listener and every connection, as a killed server would;
// the data stays for Restart. Clients then see refused connections.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopped = true
	ln := s.ln
	s.ln = nil
	conns := s.dropLocked()
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		c.nc.Close()
	}
}

// Restart listens again on the same address after Stop.
func (s *Server) Restart() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("zdbtest: restart of a closed server")
	}
	if !s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	var ln net.Listener
	var err error
	// The port was ours a moment ago; a few tries cover a slow close.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("zdbtest: restart on %s: %w", s.addr, err)
	}
	s.serve(ln)
	return nil
}

// Close stops the server for good and waits for its goroutines.
func (s *Server) Close() error {
	s.Stop()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) dropLocked() []*client {
	var out []*client
	for c := range s.conns {
		out = append(out, c)
		delete(s.conns, c)
	}
	return out
}

// DropConnections closes every client connection now; the server keeps
// listening.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := s.dropLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.nc.Close()
	}
}

// SetDelay makes every reply wait d (0 to stop).
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// SetHang makes the server read requests and never answer them (a
// half-dead node). Turning it off does not answer the swallowed requests.
func (s *Server) SetHang(on bool) {
	s.mu.Lock()
	s.hang = on
	s.mu.Unlock()
}

// Fail makes every command whose table name is command (for example "SET")
// reply with the error text reply, as 0-db does on a disk failure ("Cannot
// write data right now"). An empty reply clears it.
func (s *Server) Fail(command, reply string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reply == "" {
		delete(s.fail, strings.ToUpper(command))
		return
	}
	s.fail[strings.ToUpper(command)] = reply
}

// Garble makes command reply with bytes that are not RESP, to test a
// client's handling of corrupt replies. on=false clears it.
func (s *Server) Garble(command string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.garble[strings.ToUpper(command)] = true
	} else {
		delete(s.garble, strings.ToUpper(command))
	}
}

// CreateNamespace makes a namespace directly (no wire), with an optional
// password (the namespace is then private) and maxsize (0 = none).
func (s *Server) CreateNamespace(name, password string, maxSize int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nss[name]; ok {
		return fmt.Errorf("zdbtest: namespace %s exists", name)
	}
	ns := newNamespace(name)
	ns.password = password
	ns.public = password == ""
	ns.maxsize = maxSize
	s.nss[name] = ns
	s.order = append(s.order, name)
	return nil
}

// FillUp sets the namespace's maxsize to what it holds now (1 byte when
// empty), so every write that adds bytes gets "No space left on this
// namespace".
func (s *Server) FillUp(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, ok := s.nss[name]
	if !ok || name == "default" {
		return fmt.Errorf("zdbtest: no namespace %s to fill", name)
	}
	ns.maxsize = ns.dataSize
	if ns.maxsize == 0 {
		ns.maxsize = 1
	}
	return nil
}

// NamespaceInfo is what a test may read of a namespace directly.
type NamespaceInfo struct {
	Entries  int
	DataSize int64
	MaxSize  int64
	Password bool
	Public   bool
}

// Namespace returns a namespace's figures.
func (s *Server) Namespace(name string) (NamespaceInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, ok := s.nss[name]
	if !ok {
		return NamespaceInfo{}, false
	}
	return NamespaceInfo{Entries: len(ns.live), DataSize: ns.dataSize, MaxSize: ns.maxsize, Password: ns.password != "", Public: ns.public}, true
}

// client is one connection's session.
type client struct {
	s        *Server
	nc       net.Conn
	ns       *namespace
	writable bool
	admin    bool
	nonce    string
}

func (c *client) run() {
	defer func() {
		c.nc.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	}()
	r := bufio.NewReaderSize(c.nc, 64<<10)
	w := bufio.NewWriterSize(c.nc, 64<<10)
	for {
		args, err := ReadRequest(r)
		var pe *ProtocolError
		if errors.As(err, &pe) {
			w.Write(errReply(pe.Reply))
			w.Flush()
			if pe.Close {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		reply, closeAfter, wait := c.exec(args)
		c.s.mu.Lock()
		delay, hang := c.s.delay, c.s.hang
		c.s.mu.Unlock()
		if hang {
			continue
		}
		if wait > 0 {
			time.Sleep(wait)
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		if _, err := w.Write(reply); err != nil {
			return
		}
		// Flush only when no pipelined request is already waiting, so a
		// pipeline gets its replies in one write, as 0-db's do.
		if r.Buffered() == 0 || closeAfter {
			if err := w.Flush(); err != nil {
				return
			}
		}
		if closeAfter {
			return
		}
	}
}

// exec runs one request under the server lock and returns the reply, whether
// to close the connection after it, and how long to wait before sending it
// (WAIT).
func (c *client) exec(args [][]byte) ([]byte, bool, time.Duration) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	// A client whose namespace was deleted is told so and dropped,
	// whatever it asked.
	if c.ns.removed {
		return errReply("Your active namespace is not available anymore (probably removed)."), true, 0
	}
	s.commands++
	cmd := lookup(args[0])
	if cmd == nil {
		return errReply("Command not supported"), false, 0
	}
	if msg, ok := s.fail[cmd.name]; ok {
		return errReply(msg), false, 0
	}
	if s.garble[cmd.name] {
		return []byte("?this is not RESP\r\n"), false, 0
	}
	if cmd.name == "WAIT" {
		return c.wait(args)
	}
	return cmd.run(c, args), false, 0
}

func newChallenge() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
