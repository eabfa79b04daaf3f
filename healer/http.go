package healer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// Handler serves the healer over HTTP (the daemon binds it to loopback by
// default):
//
//	GET    /metrics                  Prometheus metrics
//	GET    /status                   Status as JSON
//	GET    /healthz                  "ok"
//	POST   /v1/heal[?object=NAME]    repair now (RepairAll or HealObject); RepairReport
//	POST   /v1/scrub[?deep=1]        one scrub pass; progress as JSON lines, the last one final
//	POST   /v1/gc                    one garbage collection pass; GCReport
//	POST   /v1/probe                 one monitor round
//	PUT    /v1/settings              {"workers":N,"rate_limit":BYTES} (either may be omitted)
//	POST   /v1/backends              {"spec":{...},"secret":"..."} adds a backend
//	GET    /v1/backends/{name}       one backend's BackendStatus (404 if unknown)
//	POST   /v1/backends/{name}/drain starts draining a backend
//	DELETE /v1/backends/{name}       forgets an emptied backend
//
// Errors come back as {"error": "...", "code": "..."} with a 4xx/5xx
// status; code, when present, names the kind of the request's fault
// (errorKinds: "backend_exists", "secret_in_use", "backend_retired",
// "backend_not_empty" are 409s, "backend_unusable" a 422, "not_found" a
// 404). A 500 is the daemon's own failure. A request
// body is one JSON object of the fields listed, at most 64 KiB: an unknown
// field or text after the object is a 400, a larger body a 413, and a
// body that has not all arrived within 30 s of the headers a 408 (the
// connection is closed).
//
// Requests that change something (every method but GET and HEAD) must
// carry the header ClientHeader and name as Host an IP address, localhost,
// or the host of one of listenAddrs (the address the server listens on, as
// configured: "storage1.lan:9310"). The daemon adds a token on top
// (healstore's requireToken); this is what keeps a web page in a browser
// on the same machine out, whatever it knows: a page
// cannot add a custom header to a cross-origin request without a CORS
// preflight, which is never approved, and a page that rebinds its own
// domain name to 127.0.0.1 still sends that name as Host.
func (h *Healer) Handler(listenAddrs ...string) http.Handler {
	return guardChanges(h.routes(), listenAddrs)
}

// ClientHeader is the header (value "1") that requests which change
// something must carry; Client sets it.
const ClientHeader = "X-Healstore-Client"

func guardChanges(next http.Handler, listenAddrs []string) http.Handler {
	named := map[string]bool{}
	for _, a := range listenAddrs {
		if h := hostOf(a); h != "" {
			named[h] = true
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if r.Header.Get(ClientHeader) != "1" {
				replyErr(w, http.StatusForbidden, fmt.Errorf("%s %s needs the header %s: 1 (healstore's client sets it; browsers cannot)", r.Method, r.URL.Path, ClientHeader))
				return
			}
			if h := hostOf(r.Host); h != "localhost" && net.ParseIP(h) == nil && !named[h] {
				replyErr(w, http.StatusForbidden, fmt.Errorf("%s %s: host %q is not an IP address, localhost or the address the daemon listens on", r.Method, r.URL.Path, r.Host))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hostOf is the host part of a host[:port], lower case, without brackets.
func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"))
}

func (h *Healer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s, err := h.Status(r.Context())
		reply(w, s, err)
	})
	mux.HandleFunc("POST /v1/heal", func(w http.ResponseWriter, r *http.Request) {
		if name := r.URL.Query().Get("object"); name != "" {
			rep, err := h.HealObject(r.Context(), name)
			reply(w, rep, stoppedWork(r, err))
			return
		}
		if err := h.ProbeAll(r.Context()); err != nil {
			h.log.Warn("probe before heal", "err", err)
		}
		rep, err := h.RepairAll(r.Context(), nil)
		reply(w, rep, stoppedWork(r, err))
	})
	mux.HandleFunc("POST /v1/scrub", func(w http.ResponseWriter, r *http.Request) {
		deep := false
		if v := r.URL.Query().Get("deep"); v != "" {
			var err error
			if deep, err = strconv.ParseBool(v); err != nil {
				// Taken as false, it ran the light scrub in place of the
				// deep one asked for.
				replyErr(w, http.StatusBadRequest, fmt.Errorf("scrub: deep %q is not true or false", v))
				return
			}
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		fl, _ := w.(http.Flusher)
		last := 0
		p, err := h.Scrub(r.Context(), ScrubOptions{Deep: deep, Progress: func(p ScrubProgress) {
			// Every 1% (and the end) is enough for a progress bar.
			if step := max(p.Total/100, 1); p.Done-last >= step || !p.Finished.IsZero() {
				last = p.Done
				_ = enc.Encode(p)
				if fl != nil {
					fl.Flush()
				}
			}
		}})
		if err != nil {
			_ = enc.Encode(map[string]string{"error": stoppedWork(r, err).Error()})
			return
		}
		_ = enc.Encode(p)
	})
	mux.HandleFunc("POST /v1/gc", func(w http.ResponseWriter, r *http.Request) {
		rep, err := h.GC(r.Context())
		reply(w, rep, err)
	})
	mux.HandleFunc("POST /v1/probe", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]bool{"ok": true}, h.ProbeAll(r.Context()))
	})
	mux.HandleFunc("PUT /v1/settings", func(w http.ResponseWriter, r *http.Request) {
		var req settingsRequest
		if code, err := h.readBody(w, r, &req); err != nil {
			replyErr(w, code, fmt.Errorf("settings: %w", err))
			return
		}
		// All checked before any is applied: a refused request changes
		// nothing.
		if err := req.check(); err != nil {
			replyErr(w, http.StatusBadRequest, err)
			return
		}
		if req.Workers != nil {
			h.SetWorkers(*req.Workers)
		}
		if req.RateLimit != nil {
			h.SetRateLimit(*req.RateLimit)
		}
		c := h.Config()
		reply(w, Settings{Workers: c.Workers, RateLimit: c.RateLimit, Grace: c.Grace.String()}, nil)
	})
	mux.HandleFunc("POST /v1/backends", func(w http.ResponseWriter, r *http.Request) {
		var req addBackendRequest
		if code, err := h.readBody(w, r, &req); err != nil {
			replyErr(w, code, fmt.Errorf("backend: %w", err))
			return
		}
		// ValidateInput: a field of another kind (bucket on a local
		// backend) is the request's fault, 400 like any bad spec.
		if err := req.Spec.ValidateInput(); err != nil {
			replyErr(w, http.StatusBadRequest, err)
			return
		}
		if req.Spec.Kind == backends.KindLocal && !filepath.IsAbs(req.Spec.Path) {
			// Taken from the daemon's working directory, and from each
			// process's own that opens the store later.
			replyErr(w, http.StatusBadRequest, fmt.Errorf("backend %s: path %q is relative; give an absolute path", req.Spec.Name, req.Spec.Path))
			return
		}
		reply(w, map[string]string{"added": req.Spec.Name}, h.AddBackend(r.Context(), req.Spec, req.Secret))
	})
	mux.HandleFunc("POST /v1/backends/{name}/drain", func(w http.ResponseWriter, r *http.Request) {
		name, ok := backendName(w, r)
		if !ok {
			return
		}
		reply(w, map[string]string{"draining": name}, h.Drain(r.Context(), name))
	})
	mux.HandleFunc("GET /v1/backends/{name}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := backendName(w, r)
		if !ok {
			return
		}
		bs, err := h.Backend(r.Context(), name)
		reply(w, bs, err)
	})
	mux.HandleFunc("DELETE /v1/backends/{name}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := backendName(w, r)
		if !ok {
			return
		}
		reply(w, map[string]string{"removed": name}, h.RemoveBackend(r.Context(), name))
	})
	return mux
}

// backendName is the {name} of a backend route, or false after a 400 if
// no backend can have it: a '/' (sent as %2F) or NUL the metastore
// refuses as an invalid argument, which was answered as the daemon's own
// failure, a 500.
func backendName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if strings.ContainsAny(name, "/\x00") {
		replyErr(w, http.StatusBadRequest, fmt.Errorf("backend name %q: no backend has a name with '/' or NUL", name))
		return "", false
	}
	return name, true
}

// stoppedWork names why a request's work ended when the server ended its
// context with a cause (the daemon does as it stops): the user asking for
// a heal reads that the daemon is stopping, not a bare "context canceled".
func stoppedWork(r *http.Request, err error) error {
	ctx := r.Context()
	if err == nil || ctx.Err() == nil {
		return err
	}
	if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() && !errors.Is(err, cause) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

// maxRequestBody bounds a request body. The largest the client sends, a
// backend spec with its secret, is well under it.
const maxRequestBody = 64 << 10

// defaultBodyTimeout bounds how long a handler waits for a request's
// body: the largest is well under maxRequestBody, seconds on any link.
const defaultBodyTimeout = 30 * time.Second

// readBody is decodeBody with a read deadline of h.bodyTimeout for the
// body: a client that sends its body a byte at a time held the handler
// (and its goroutine and connection) for ever. The server has no
// ReadTimeout, which would cut heal and scrub requests that run for
// minutes. Nor does this deadline: once the body is read to its end,
// net/http clears the connection's read deadline as it starts its
// background read (TestBodyDeadlineLiftedForTheHandler holds it to
// that), so the handler's work and its request's context go on.
func (h *Healer) readBody(w http.ResponseWriter, r *http.Request, v any) (int, error) {
	// ErrNotSupported (a ResponseWriter that is no connection's, as in
	// tests) leaves the body without a deadline, as before.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.bodyTimeout))
	code, err := decodeBody(w, r, v)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The rest of the body is never read: the connection closes after
		// the reply. (The deadline stays, so net/http's own reading of
		// the rest, to reuse the connection, fails at once too.)
		w.Header().Set("Connection", "close")
		return http.StatusRequestTimeout, fmt.Errorf("the request body did not arrive within %s", h.bodyTimeout)
	}
	return code, err
}

// decodeBody decodes r's body, one JSON object, into v, and returns the
// status to answer with if that fails: 413 for a body over maxRequestBody,
// 400 for a field v does not have (a misspelt field would be dropped and
// the request answered as done), for anything but space after the object
// and for an empty body. The errors name what was wrong, never a value
// (the body may hold a secret).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Only space may follow the object: Token reports EOF then.
		if _, err = dec.Token(); err == io.EOF {
			return 0, nil
		}
		if !errors.As(err, new(*http.MaxBytesError)) {
			return http.StatusBadRequest, errors.New("the request body has more after the JSON object")
		}
	}
	if errors.As(err, new(*http.MaxBytesError)) {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("the request body is larger than %d bytes", maxRequestBody)
	}
	if err == io.EOF {
		return http.StatusBadRequest, errors.New("the request body is empty; want a JSON object")
	}
	return http.StatusBadRequest, fmt.Errorf("request body: %w", err)
}

// addBackendRequest is the body of POST /v1/backends.
type addBackendRequest struct {
	Spec   backends.Spec `json:"spec"`
	Secret string        `json:"secret"`
}

// settingsRequest is the body of PUT /v1/settings; a field left out
// keeps its value.
type settingsRequest struct {
	Workers   *int   `json:"workers"`
	RateLimit *int64 `json:"rate_limit"`
}

// check refuses what the config refuses for healer.workers and
// healer.rate_bytes, naming the field and value. SetWorkers would take
// 0 or less as 1 and any number above MaxWorkers as is.
func (q settingsRequest) check() error {
	if q.Workers != nil && (*q.Workers < 1 || *q.Workers > MaxWorkers) {
		return fmt.Errorf("settings: workers %d is not from 1 to %d", *q.Workers, MaxWorkers)
	}
	if q.RateLimit != nil && *q.RateLimit < 0 {
		return fmt.Errorf("settings: rate_limit %d is negative (0 is no cap)", *q.RateLimit)
	}
	return nil
}

// errorKinds are the errors the API answers as the request's fault, with
// the status and the machine-readable "code" of the reply (Client turns
// the code back into the sentinel, so errors.Is works on both sides).
// Anything else is the daemon's own failure, a 500.
var errorKinds = []struct {
	err    error
	status int
	code   string
}{
	{metastore.ErrNotFound, http.StatusNotFound, "not_found"},
	{ErrBackendExists, http.StatusConflict, "backend_exists"},
	{ErrSecretInUse, http.StatusConflict, "secret_in_use"},
	{ErrBackendRetired, http.StatusConflict, "backend_retired"},
	{ErrBackendNotEmpty, http.StatusConflict, "backend_not_empty"},
	{ErrBackendUnusable, http.StatusUnprocessableEntity, "backend_unusable"},
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		for _, k := range errorKinds {
			if errors.Is(err, k.err) {
				writeErr(w, k.status, k.code, err)
				return
			}
		}
		replyErr(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func replyErr(w http.ResponseWriter, code int, err error) { writeErr(w, code, "", err) }

// writeErr answers {"error": text, "code": kind}; kind "" is left out.
func writeErr(w http.ResponseWriter, status int, kind string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorReply{Error: err.Error(), Code: kind})
}

// errorReply is the body of every error answer.
type errorReply struct {
	Error string `json:"error"`
	// Code names the kind of a request's fault (errorKinds), if known.
	Code string `json:"code,omitempty"`
}
