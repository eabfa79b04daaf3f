package backendtest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// ClosedAddr returns a loopback host:port where nothing listens (it was
// free a moment ago), for "stopped server" tests: connections are refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// HangingServer returns the loopback host:port of a server that accepts
// connections and then never reads or answers, for deadline tests. It stops
// when the test ends.
func HangingServer(t testing.TB) string {
	t.Helper()
	addr, _ := CountingHangingServer(t)
	return addr
}

// CountingHangingServer is HangingServer, and also reports how many
// connections the server accepted so far: for tests that a command does
// not reach for a backend at all.
func CountingHangingServer(t testing.TB) (addr string, accepted func() int) {
	t.Helper()
	return hangingServer(t, 0)
}

// HangThenRefuse is HangingServer for d: then it closes the connections
// it holds and stops listening, like a node that hung for a while and then
// went away.
func HangThenRefuse(t testing.TB, d time.Duration) string {
	t.Helper()
	addr, _ := hangingServer(t, d)
	return addr
}

// hangingServer serves HangingServer, stopping after stopAfter (0: when
// the test ends).
func hangingServer(t testing.TB, stopAfter time.Duration) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			n++
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ln.Close()
			<-done
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			conns = nil
			mu.Unlock()
		})
	}
	if stopAfter > 0 {
		time.AfterFunc(stopAfter, stop)
	}
	t.Cleanup(stop)
	return ln.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}
