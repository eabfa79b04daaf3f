package tfgrid

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func nodesJSON(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/nodes.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proxyServer serves handler and counts requests.
func proxyServer(t *testing.T, handler func(w http.ResponseWriter, r *http.Request, n int)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var count atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(count.Add(1))
		handler(w, r, n)
	}))
	t.Cleanup(srv.Close)
	return srv, &count
}

func TestProxyURL(t *testing.T) {
	for net, want := range map[string]string{
		"main": "https://gridproxy.grid.tf",
		"test": "https://gridproxy.test.grid.tf",
		"dev":  "https://gridproxy.dev.grid.tf",
		"qa":   "https://gridproxy.qa.grid.tf",
	} {
		if got, err := ProxyURL(net); err != nil || got != want {
			t.Errorf("ProxyURL(%q) = %q, %v; want %q", net, got, err, want)
		}
	}
	if _, err := ProxyURL("mainnet"); err == nil {
		t.Error("unknown network accepted")
	}
}

func TestNodesSendsFiltersAndDecodes(t *testing.T) {
	body := nodesJSON(t)
	var got url.Values
	var path string
	srv, _ := proxyServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		got, path = r.URL.Query(), r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	no := false
	c := &ProxyClient{BaseURL: srv.URL + "/"}
	nodes, err := c.Nodes(context.Background(), NodeQuery{
		Status: "up", FreeHRU: 100 << 30, FarmIDs: []uint64{1, 4}, Rented: &no,
		Excluded: []uint64{12, 13}, Size: 50, Randomize: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if path != "/nodes" {
		t.Errorf("path = %q", path)
	}
	want := map[string]string{
		"status": "up", "free_hru": "107374182400", "farm_ids": "1,4", "rented": "false",
		"excluded": "12,13", "size": "50", "randomize": "true",
	}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("query %s = %q, want %q", k, got.Get(k), v)
		}
	}
	for _, k := range []string{"free_sru", "available_for", "page"} {
		if got.Has(k) {
			t.Errorf("query sent unset filter %s=%q", k, got.Get(k))
		}
	}
	if len(nodes) != 7 {
		t.Fatalf("decoded %d nodes, want 7", len(nodes))
	}
	n := nodes[0]
	if n.NodeID != 11 || n.FarmID != 1 || n.Status != "up" || n.Rented {
		t.Errorf("node 0 = %+v", n)
	}
	if free := n.Free().HRU; free != 7_000_000_000_000 {
		t.Errorf("node 11 free HRU = %d", free)
	}
	if nodes[3].RentedByTwinID != 99 || !nodes[3].Rented {
		t.Errorf("node 14 rent fields = %+v", nodes[3])
	}
	if !nodes[4].InDedicatedFarm {
		t.Errorf("node 15 should be in a dedicated farm")
	}
}

func TestNodesAvailableForAndSSD(t *testing.T) {
	var got url.Values
	srv, _ := proxyServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		got = r.URL.Query()
		w.Write([]byte("[]"))
	})
	c := &ProxyClient{BaseURL: srv.URL}
	if _, err := c.Nodes(context.Background(), NodeQuery{FreeSRU: 5, AvailableFor: 42, Page: 2}); err != nil {
		t.Fatal(err)
	}
	if got.Get("free_sru") != "5" || got.Get("available_for") != "42" || got.Get("page") != "2" || got.Has("rented") {
		t.Errorf("query = %v", got)
	}
}

func TestNodesEmpty(t *testing.T) {
	srv, _ := proxyServer(t, func(w http.ResponseWriter, r *http.Request, _ int) { w.Write([]byte("[]\n")) })
	nodes, err := (&ProxyClient{BaseURL: srv.URL}).Nodes(context.Background(), NodeQuery{Status: "up"})
	if err != nil || len(nodes) != 0 {
		t.Fatalf("nodes = %v, err = %v", nodes, err)
	}
}

func TestNodesClientErrorNotRetried(t *testing.T) {
	srv, count := proxyServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid farm_ids: not a number"}`))
	})
	_, err := (&ProxyClient{BaseURL: srv.URL, Backoff: time.Millisecond}).Nodes(context.Background(), NodeQuery{})
	var pe *ProxyError
	if !errors.As(err, &pe) || pe.StatusCode != 400 || pe.Message != "invalid farm_ids: not a number" {
		t.Fatalf("err = %v, want ProxyError 400 with the proxy's message", err)
	}
	if n := count.Load(); n != 1 {
		t.Errorf("a 400 was retried: %d requests", n)
	}
}

func TestNodesServerErrorRetried(t *testing.T) {
	body := nodesJSON(t)
	srv, count := proxyServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n < 3 {
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("<html>502 Bad Gateway</html>"))
			return
		}
		w.Write(body)
	})
	nodes, err := (&ProxyClient{BaseURL: srv.URL, Backoff: time.Millisecond}).Nodes(context.Background(), NodeQuery{})
	if err != nil || len(nodes) != 7 {
		t.Fatalf("nodes %d, err %v", len(nodes), err)
	}
	if n := count.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

func TestNodesGivesUpAfterAttempts(t *testing.T) {
	srv, count := proxyServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"database is down"}`))
	})
	_, err := (&ProxyClient{BaseURL: srv.URL, Backoff: time.Millisecond, Attempts: 4}).Nodes(context.Background(), NodeQuery{})
	var pe *ProxyError
	if !errors.As(err, &pe) || pe.StatusCode != 503 {
		t.Fatalf("err = %v", err)
	}
	if n := count.Load(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
}

func TestNodesSlowAnswerRetried(t *testing.T) {
	body := nodesJSON(t)
	srv, count := proxyServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			// Slower than the client's per-request timeout.
			select {
			case <-r.Context().Done():
			case <-time.After(20 * time.Second):
			}
			return
		}
		w.Write(body)
	})
	// The timeout also bounds the second, quick answer: with 200ms a
	// stall of the loaded CI machine could time it out too, and the
	// third request would fail the count below.
	c := &ProxyClient{BaseURL: srv.URL, Backoff: time.Millisecond, RequestTimeout: time.Second}
	nodes, err := c.Nodes(context.Background(), NodeQuery{})
	if err != nil || len(nodes) != 7 {
		t.Fatalf("nodes %d, err %v", len(nodes), err)
	}
	if n := count.Load(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestNodesAlwaysSlow(t *testing.T) {
	srv, _ := proxyServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	})
	c := &ProxyClient{BaseURL: srv.URL, Backoff: time.Millisecond, RequestTimeout: 100 * time.Millisecond, Attempts: 2}
	_, err := c.Nodes(context.Background(), NodeQuery{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
}

func TestNodesCallerCancelStopsRetries(t *testing.T) {
	srv, count := proxyServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := (&ProxyClient{BaseURL: srv.URL, Backoff: 10 * time.Second, Attempts: 5}).Nodes(ctx, NodeQuery{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := count.Load(); n != 1 {
		t.Errorf("%d requests after cancel, want 1", n)
	}
}

func TestNodesBadAnswer(t *testing.T) {
	srv, _ := proxyServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Write([]byte(`{"nodes": "not a list"}`))
	})
	_, err := (&ProxyClient{BaseURL: srv.URL, Backoff: time.Millisecond, Attempts: 1}).Nodes(context.Background(), NodeQuery{})
	if err == nil {
		t.Fatal("a non-list answer was accepted")
	}
}

func TestNodesBadBaseURL(t *testing.T) {
	if _, err := (&ProxyClient{BaseURL: "gridproxy.grid.tf"}).Nodes(context.Background(), NodeQuery{}); err == nil {
		t.Fatal("base URL without scheme accepted")
	}
}
