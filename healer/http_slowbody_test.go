package healer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// TestSlowRequestBodyTimesOut: a client that sends its headers and then
// its body a byte at a time gets a 408 once the body deadline passes, and
// the handler returns; before, it held the handler for as long as the
// client kept trickling (a 64 KiB body at a byte a second: 18 hours).
func TestSlowRequestBodyTimesOut(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	e.h.bodyTimeout = 300 * time.Millisecond
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	for _, c := range []struct{ method, path string }{{"PUT", "/v1/settings"}, {"POST", "/v1/backends"}} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s: 1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", c.method, c.path, ClientHeader)
		stop := make(chan struct{})
		trickled := make(chan struct{})
		go func() {
			defer close(trickled)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		// Far beyond the deadline: without one the server never answers.
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		close(stop)
		<-trickled
		conn.Close()
		if err != nil {
			t.Fatalf("%s %s with a trickling body: %v; want a 408", c.method, c.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("%s %s with a trickling body: %d, want 408", c.method, c.path, resp.StatusCode)
		}
	}
}

// TestBodyDeadlineLiftedForTheHandler: once the body is read, its
// deadline no longer applies: a handler that works past it (a backend
// add probing a slow backend) keeps its request's context. readBody
// leaves that to net/http, which clears the read deadline when it starts
// reading the connection in the background at the body's end; were a
// read deadline left in place, that read would fail at it and cancel the
// request's context.
func TestBodyDeadlineLiftedForTheHandler(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	e.h.bodyTimeout = 100 * time.Millisecond
	e.h.try = func(ctx context.Context, spec backends.Spec, secret string) error {
		select {
		case <-ctx.Done():
			return fmt.Errorf("context ended while trying the backend: %w", ctx.Err())
		case <-time.After(5 * e.h.bodyTimeout):
			return nil
		}
	}
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	c := &Client{Addr: strings.TrimPrefix(srv.URL, "http://")}
	spec := backends.Spec{Name: "n1", Kind: backends.KindLocal, Path: filepath.Join(e.dir, "n1"), Node: "n1"}
	if err := c.AddBackend(context.Background(), spec, ""); err != nil {
		var de *DaemonError
		errors.As(err, &de)
		t.Fatalf("add a backend whose try outlasts the body deadline: %v (%+v)", err, de)
	}
}
