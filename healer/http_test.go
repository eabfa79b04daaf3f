package healer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// apiDo sends one request that changes something to h's API, as the
// client does, and returns the status and body.
func apiDo(t *testing.T, srv *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(ClientHeader, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// PUT /v1/settings refuses what the config would refuse, and a request
// refused changes nothing: before, workers -5 was taken as 1 and 100000
// was taken as is (the config caps it at MaxWorkers), both answered 200.
func TestSettingsRefusesBadInput(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	if code, body := apiDo(t, srv, "PUT", "/v1/settings", `{"workers":3,"rate_limit":1000}`); code != http.StatusOK {
		t.Fatalf("good settings: %d %s", code, body)
	}
	for _, c := range []struct{ body, want string }{
		{`{"workers":-5}`, "workers -5"},
		{`{"workers":0}`, "workers 0"},
		{`{"workers":100000}`, "workers 100000"},
		{`{"workers":100000,"rate_limit":5}`, "workers 100000"}, // nothing of a bad request is applied
		{`{"workers":7,"rate_limit":-1}`, "rate_limit -1"},
	} {
		code, body := apiDo(t, srv, "PUT", "/v1/settings", c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want 400 naming %q", c.body, code, body, c.want)
		}
		if cfg := e.h.Config(); cfg.Workers != 3 || cfg.RateLimit != 1000 {
			t.Errorf("%s changed the settings to workers %d, rate %d", c.body, cfg.Workers, cfg.RateLimit)
		}
	}
}
