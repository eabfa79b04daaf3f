package healer

import (
	"bytes"
	"encoding/json"
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

// A request body is one JSON object of the fields the route knows, no
// larger than maxRequestBody. Before, a misspelt field was dropped and
// the request answered 200 as if done (a backend added without the
// secret given as "secert"), text after the object was ignored, and the
// body was read without a bound.
func TestRequestBodyChecked(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	big := `{"workers":2,"x":"` + strings.Repeat("a", maxRequestBody) + `"}`
	for _, c := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/v1/settings", `{"worker":2}`, http.StatusBadRequest, `unknown field \"worker\"`},
		{"PUT", "/v1/settings", `{"workers":2} {"workers":9}`, http.StatusBadRequest, "after the JSON object"},
		{"PUT", "/v1/settings", `{"workers":2}]`, http.StatusBadRequest, "after the JSON object"},
		{"PUT", "/v1/settings", ``, http.StatusBadRequest, "body is empty"},
		{"PUT", "/v1/settings", big, http.StatusRequestEntityTooLarge, "larger than"},
		{"POST", "/v1/backends", `{"spec":{"name":"n1","kind":"local","path":"` + e.dir + `/n1"},"secert":"s3cr3t"}`, http.StatusBadRequest, `unknown field \"secert\"`},
		{"POST", "/v1/backends", `{"spec":{"name":"n1","kind":"local","path":"` + e.dir + `/n1","nod":"x"}}`, http.StatusBadRequest, `unknown field \"nod\"`},
	} {
		code, body := apiDo(t, srv, c.method, c.path, c.body)
		if len(body) > 300 {
			body = body[:300]
		}
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s %.60q: %d %s, want %d naming %q", c.method, c.path, c.body, code, body, c.code, c.want)
		}
		if strings.Contains(body, "s3cr3t") {
			t.Errorf("%s %s: the answer shows the secret: %s", c.method, c.path, body)
		}
	}
	if w := e.h.Config().Workers; w == 2 {
		t.Error("a refused settings request was applied")
	}
	if _, err := e.meta.GetBackend(t.Context(), "n1"); err == nil {
		t.Error("a refused backend request added the backend")
	}
	// Whitespace after the object is fine; the client sends a newline.
	if code, body := apiDo(t, srv, "PUT", "/v1/settings", "{\"workers\":4}\n\t "); code != http.StatusOK {
		t.Errorf("settings with trailing whitespace: %d %s", code, body)
	}
}

// FuzzDecodeBody: whatever the body, decoding a request answers 400 or
// 413 or decodes one JSON object no larger than the bound, never panics,
// and a settings request it passes with check is one SetWorkers takes as
// is.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"workers":3,"rate_limit":1000}`, `{"workers":-1}`, `{"workers":1e3}`, `{"rate_limit":9223372036854775808}`,
		`{"worker":2}`, `{} {}`, `{}]`, `null`, ``, " \n", `[]`, `"x"`, `{"workers":null}`,
		`{"spec":{"name":"n1","kind":"local","path":"/x"},"secret":"s"}`, `{"spec":{"name":"../x","kind":"s3"}}`,
		`{"spec":{"quota":-1,"tls":"yes"}}`, `{"secret":"\u0000\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&settingsRequest{}, &addBackendRequest{}} {
			r := httptest.NewRequest("PUT", "/v1/x", bytes.NewReader(body))
			code, err := decodeBody(httptest.NewRecorder(), r, v)
			switch {
			case err == nil && code != 0, err != nil && code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge:
				t.Fatalf("%T: code %d with error %v", v, code, err)
			case err == nil && len(body) > maxRequestBody:
				t.Fatalf("%T: decoded a body of %d bytes", v, len(body))
			case err == nil && !json.Valid(body):
				t.Fatalf("%T: decoded a body that is not JSON: %q", v, body)
			}
			if q, ok := v.(*settingsRequest); ok && err == nil && q.check() == nil && q.Workers != nil && (*q.Workers < 1 || *q.Workers > MaxWorkers) {
				t.Fatalf("check passed workers %d", *q.Workers)
			}
		}
	})
}

// POST /v1/scrub?deep= takes a boolean and refuses anything else with
// 400: before, deep=yes ran a light scrub (no shard read) and answered
// 200 as if the deep one asked for had run.
func TestScrubDeepMustBeBool(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	code, body := apiDo(t, srv, "POST", "/v1/scrub?deep=yes", "")
	if code != http.StatusBadRequest || !strings.Contains(body, `deep \"yes\"`) {
		t.Fatalf("scrub?deep=yes: %d %s, want 400 naming deep", code, body)
	}
	e.h.mu.Lock()
	ran := len(e.h.scrubs)
	e.h.mu.Unlock()
	if ran != 0 {
		t.Fatal("a refused scrub request ran a scrub")
	}
	for _, q := range []string{"", "?deep=1", "?deep=false"} {
		if code, body := apiDo(t, srv, "POST", "/v1/scrub"+q, ""); code != http.StatusOK || !strings.Contains(body, `"finished"`) {
			t.Errorf("scrub%s: %d %s", q, code, body)
		}
	}
}

// A backend name no backend can have ("../x" through %2F, a NUL) is the
// caller's mistake, a 400, not a 500 that reads as the daemon failing.
func TestBadBackendNameIs400(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	for _, c := range [][2]string{{"POST", "/v1/backends/..%2Fx/drain"}, {"DELETE", "/v1/backends/..%2Fx"}, {"DELETE", "/v1/backends/a%00b"}, {"GET", "/v1/backends/..%2Fx"}} {
		if code, body := apiDo(t, srv, c[0], c[1], ""); code != http.StatusBadRequest || !strings.Contains(body, "backend name") {
			t.Errorf("%s %s: %d %s, want 400 naming the name", c[0], c[1], code, body)
		}
	}
}

// POST /v1/backends refuses a local backend with a relative path: the
// daemon would take it from its own working directory, and every process
// opening the store later from its own. It was added (200) under the
// daemon's working directory.
func TestAddBackendRelativePath(t *testing.T) {
	e := newEnv(t, envOpts{backends: 6})
	srv := httptest.NewServer(e.h.Handler())
	defer srv.Close()
	t.Chdir(t.TempDir())
	code, body := apiDo(t, srv, "POST", "/v1/backends", `{"spec":{"name":"n1","kind":"local","path":"rel/n1","node":"n1"}}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "rel/n1") || !strings.Contains(body, "absolute") {
		t.Fatalf("relative path: %d %s, want 400 naming the path", code, body)
	}
	if _, err := e.meta.GetBackend(t.Context(), "n1"); err == nil {
		t.Fatal("the backend was added")
	}
}
