package healer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"

	"github.com/healstore/healstore/backends"
)

// ErrNoDaemon means nothing listens at the daemon's address.
var ErrNoDaemon = errors.New("no healstore daemon at that address")

// Client talks to a running daemon's Handler (the CLI uses it so status,
// heal, scrub and backend commands work while the daemon holds the store).
type Client struct {
	// Addr is host:port of the daemon.
	Addr string
	// HTTP is the client to use; nil means a plain one.
	HTTP *http.Client
	// Token is the daemon's API token, sent with requests that change
	// something (the daemon writes it in its store's dir; see
	// healstore.DaemonToken).
	Token string
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+dialAddr(c.Addr)+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set(ClientHeader, "1")
	if c.Token != "" && method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		// No proxy: HTTP_PROXY set for the outside world would carry the
		// API token to the proxy for a daemon on a network address (Go
		// never proxies loopback). A command makes few requests: no pool.
		hc = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	}
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial") {
			return nil, fmt.Errorf("%w (%s)", ErrNoDaemon, c.Addr)
		}
		return nil, fmt.Errorf("daemon %s: %w", c.Addr, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e errorReply
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
		}
		return nil, &DaemonError{Status: resp.StatusCode, Msg: e.Error, Code: e.Code}
	}
	return resp, nil
}

// DaemonError is an error the daemon answered with.
type DaemonError struct {
	Status int
	Msg    string
	// Code is the reply's machine-readable kind ("backend_exists"), if
	// any: Is matches the sentinel it stands for (ErrBackendExists), so a
	// caller tells the cases apart as it does in process.
	Code string
}

func (e *DaemonError) Error() string { return "daemon: " + e.Msg }

// Is reports whether target is the sentinel of e's Code.
func (e *DaemonError) Is(target error) bool {
	if e.Code == "" {
		return false
	}
	for _, k := range errorKinds {
		if k.code == e.Code {
			return target == k.err
		}
	}
	return false
}

func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon %s: decode %s reply: %w", c.Addr, path, err)
	}
	return nil
}

// Status fetches /status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.call(ctx, "GET", "/status", nil, &s)
}

// Backend fetches one backend's status (GET /v1/backends/{name}).
func (c *Client) Backend(ctx context.Context, name string) (*BackendStatus, error) {
	var b BackendStatus
	return &b, c.call(ctx, "GET", "/v1/backends/"+url.PathEscape(name), nil, &b)
}

// Heal asks for a repair of everything queued, or of one object.
func (c *Client) Heal(ctx context.Context, object string) (RepairReport, error) {
	var r RepairReport
	path := "/v1/heal"
	if object != "" {
		path += "?object=" + url.QueryEscape(object)
	}
	return r, c.call(ctx, "POST", path, nil, &r)
}

// Scrub runs one pass in the daemon, calling progress as it goes.
func (c *Client) Scrub(ctx context.Context, deep bool, progress func(ScrubProgress)) (ScrubProgress, error) {
	var last ScrubProgress
	resp, err := c.do(ctx, "POST", "/v1/scrub?deep="+strconv.FormatBool(deep), nil)
	if err != nil {
		return last, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			ScrubProgress
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return last, fmt.Errorf("daemon %s: scrub progress: %w", c.Addr, err)
		}
		if line.Error != "" {
			return last, &DaemonError{Status: http.StatusInternalServerError, Msg: line.Error}
		}
		last = line.ScrubProgress
		if progress != nil {
			progress(last)
		}
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("daemon %s: scrub: %w", c.Addr, err)
	}
	if last.Finished.IsZero() {
		return last, fmt.Errorf("daemon %s: scrub ended early", c.Addr)
	}
	return last, nil
}

// GC runs one garbage collection pass.
func (c *Client) GC(ctx context.Context) (GCReport, error) {
	var r GCReport
	return r, c.call(ctx, "POST", "/v1/gc", nil, &r)
}

// SetSettings changes workers and/or the rate cap (nil leaves one as is).
func (c *Client) SetSettings(ctx context.Context, workers *int, rateLimit *int64) (Settings, error) {
	var s Settings
	body := map[string]any{}
	if workers != nil {
		body["workers"] = *workers
	}
	if rateLimit != nil {
		body["rate_limit"] = *rateLimit
	}
	return s, c.call(ctx, "PUT", "/v1/settings", body, &s)
}

// AddBackend registers a backend; secret (if any) travels in the request
// body to the daemon on its (loopback) address and is stored there.
func (c *Client) AddBackend(ctx context.Context, spec backends.Spec, secret string) error {
	return c.call(ctx, "POST", "/v1/backends", map[string]any{"spec": spec, "secret": secret}, nil)
}

// Drain starts draining a backend.
func (c *Client) Drain(ctx context.Context, name string) error {
	return c.call(ctx, "POST", "/v1/backends/"+url.PathEscape(name)+"/drain", nil, nil)
}

// RemoveBackend forgets an emptied backend.
func (c *Client) RemoveBackend(ctx context.Context, name string) error {
	return c.call(ctx, "DELETE", "/v1/backends/"+url.PathEscape(name), nil, nil)
}

// dialAddr turns a listen address that names no host or every interface
// (":9310", "0.0.0.0:9310", "[::]:9310") into the loopback address of the
// same family, which reaches that listener and is a Host the API accepts.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		return net.JoinHostPort("127.0.0.1", port)
	case ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		return net.JoinHostPort("127.0.0.1", port)
	case ip != nil && ip.IsUnspecified():
		return net.JoinHostPort("::1", port)
	}
	return addr
}
