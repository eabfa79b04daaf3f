package tfgrid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Networks of the ThreeFold Grid and the public grid proxy of each.
var proxyURLs = map[string]string{
	"main": "https://gridproxy.grid.tf",
	"test": "https://gridproxy.test.grid.tf",
	"dev":  "https://gridproxy.dev.grid.tf",
	"qa":   "https://gridproxy.qa.grid.tf",
}

// ProxyURL returns the public grid proxy URL of a network: "main", "test",
// "dev" or "qa".
func ProxyURL(network string) (string, error) {
	u, ok := proxyURLs[network]
	if !ok {
		return "", fmt.Errorf("unknown grid network %q (main, test, dev or qa)", network)
	}
	return u, nil
}

// Resources are a node's capacity in the grid proxy's units: CRU in
// cores, the rest in bytes.
type Resources struct {
	CRU uint64 `json:"cru"`
	SRU uint64 `json:"sru"`
	HRU uint64 `json:"hru"`
	MRU uint64 `json:"mru"`
}

// Node is the part of a grid proxy /nodes entry that placement needs.
type Node struct {
	NodeID          uint64    `json:"nodeId"`
	FarmID          uint64    `json:"farmId"`
	FarmName        string    `json:"farmName"`
	TwinID          uint64    `json:"twinId"`
	Country         string    `json:"country"`
	City            string    `json:"city"`
	Status          string    `json:"status"` // "up", "down" or "standby"
	Healthy         bool      `json:"healthy"`
	Dedicated       bool      `json:"dedicated"`
	InDedicatedFarm bool      `json:"inDedicatedFarm"`
	Rented          bool      `json:"rented"`
	Rentable        bool      `json:"rentable"`
	RentedByTwinID  uint64    `json:"rentedByTwinId"`
	Total           Resources `json:"total_resources"`
	Used            Resources `json:"used_resources"`
}

// Free returns total minus used, never below zero (the proxy reports
// used > total on overbooked nodes).
func (n Node) Free() Resources {
	sub := func(a, b uint64) uint64 {
		if b > a {
			return 0
		}
		return a - b
	}
	return Resources{
		CRU: sub(n.Total.CRU, n.Used.CRU),
		SRU: sub(n.Total.SRU, n.Used.SRU),
		HRU: sub(n.Total.HRU, n.Used.HRU),
		MRU: sub(n.Total.MRU, n.Used.MRU),
	}
}

// NodeQuery holds the /nodes filters healstore uses. Zero fields are not
// sent.
type NodeQuery struct {
	Status  string   // "up"
	FreeHRU uint64   // bytes of free HDD at least
	FreeSRU uint64   // bytes of free SSD at least
	FarmIDs []uint64 // only these farms
	// AvailableFor: nodes free to deploy on or rented by this twin.
	AvailableFor uint64
	// Rented, when set, filters on the rented flag.
	Rented *bool
	// Excluded node ids.
	Excluded []uint64
	// Size is the page size (the proxy's default is 50), Page from 1.
	Size, Page int
	// Randomize asks the proxy for a random sample instead of the first
	// page, so repeated queries do not always offer the same nodes.
	Randomize bool
}

// Values encodes the query in the grid proxy's parameter names.
func (q NodeQuery) Values() url.Values {
	v := url.Values{}
	list := func(ids []uint64) string {
		s := make([]string, len(ids))
		for i, id := range ids {
			s[i] = strconv.FormatUint(id, 10)
		}
		return strings.Join(s, ",")
	}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	if q.FreeHRU > 0 {
		v.Set("free_hru", strconv.FormatUint(q.FreeHRU, 10))
	}
	if q.FreeSRU > 0 {
		v.Set("free_sru", strconv.FormatUint(q.FreeSRU, 10))
	}
	if len(q.FarmIDs) > 0 {
		v.Set("farm_ids", list(q.FarmIDs))
	}
	if q.AvailableFor > 0 {
		v.Set("available_for", strconv.FormatUint(q.AvailableFor, 10))
	}
	if q.Rented != nil {
		v.Set("rented", strconv.FormatBool(*q.Rented))
	}
	if len(q.Excluded) > 0 {
		v.Set("excluded", list(q.Excluded))
	}
	if q.Size > 0 {
		v.Set("size", strconv.Itoa(q.Size))
	}
	if q.Page > 0 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if q.Randomize {
		v.Set("randomize", "true")
	}
	return v
}

// ProxyError is a non-200 answer from the grid proxy.
type ProxyError struct {
	StatusCode int
	Message    string // the proxy's {"error": ...} text, shortened
}

func (e *ProxyError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("grid proxy: HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("grid proxy: HTTP %d: %s", e.StatusCode, e.Message)
}

// Temporary reports whether retrying may help (overload, gateway trouble).
func (e *ProxyError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// ProxyClient queries a grid proxy. The zero value is not usable; set
// BaseURL. Fields are read on every call, so set them before use.
type ProxyClient struct {
	// BaseURL is the proxy's root, e.g. ProxyURL("main").
	BaseURL string
	// HTTP is the client used; nil means http.DefaultClient (each attempt
	// is bounded by RequestTimeout anyway).
	HTTP *http.Client
	// RequestTimeout bounds one attempt; 0 means 30 s.
	RequestTimeout time.Duration
	// Attempts is how many times a failing query is tried; 0 means 3.
	Attempts int
	// Backoff is the wait before the first retry, doubled after each;
	// 0 means 1 s.
	Backoff time.Duration
}

// Nodes returns one page of nodes matching q. Network errors, timeouts and
// 429/5xx answers are retried with backoff; other errors are returned at
// once. An error from the proxy is a *ProxyError.
func (c *ProxyClient) Nodes(ctx context.Context, q NodeQuery) ([]Node, error) {
	base, err := url.Parse(strings.TrimRight(c.BaseURL, "/") + "/nodes")
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("grid proxy: bad base URL %q", c.BaseURL)
	}
	base.RawQuery = q.Values().Encode()
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = 3
	}
	backoff := c.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	var lastErr error
	for i := range attempts {
		if i > 0 {
			if err := sleep(ctx, backoff<<(i-1)); err != nil {
				return nil, fmt.Errorf("grid proxy: %w (last error: %w)", err, lastErr)
			}
		}
		nodes, err := c.get(ctx, base.String())
		if err == nil {
			return nodes, nil
		}
		lastErr = err
		var pe *ProxyError
		if ctx.Err() != nil || (errors.As(err, &pe) && !pe.Temporary()) {
			break
		}
	}
	return nil, fmt.Errorf("grid proxy: GET %s failed after retries: %w", base.Redacted(), lastErr)
}

// maxBody caps a /nodes answer; a page of 100 nodes is ~200 KB.
const maxBody = 16 << 20

func (c *ProxyClient) get(ctx context.Context, u string) ([]Node, error) {
	timeout := c.RequestTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &ProxyError{StatusCode: resp.StatusCode, Message: errorMessage(body)}
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxBody)
	}
	var nodes []Node
	if err := json.Unmarshal(body, &nodes); err != nil {
		return nil, fmt.Errorf("answer is not a JSON list of nodes: %w", err)
	}
	return nodes, nil
}

// errorMessage extracts {"error": "..."} or a short prefix of the body.
func errorMessage(body []byte) string {
	var r struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &r) == nil && r.Error != "" {
		msg = r.Error
	}
	msg = strings.ToValidUTF8(msg, "?")
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return msg
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
