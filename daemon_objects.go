package healstore

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
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// A daemon of an embedded (pebble) store holds its metadata: no other
// process can open the store while it runs. So that put, get, ls, stat and
// rm keep working beside the healer, the daemon serves the objects API on
// a Unix socket in the metadata directory. Only who may open that socket
// (the daemon's user, mode 0600 in a directory of the store) reaches the
// data, as only they could read the master key; the TCP address of
// metrics and status serves no object data.

// ObjectsSocketName is the daemon's objects socket, in the metadata
// directory.
const ObjectsSocketName = "daemon.sock"

// maxSocketPath is the longest path a Unix socket may have (sun_path).
const maxSocketPath = 107

// Paths of the objects API. Names travel in the query (name=), so any
// object name works without escaping rules of its own.
const (
	objectPath = "/v1/object"
	statPath   = "/v1/stat"
	listPath   = "/v1/list"
)

// objectsSocket is where cfg's daemon serves objects.
func objectsSocket(cfg *Config) string {
	return filepath.Join(cfg.MetadataDir, ObjectsSocketName)
}

// listenObjects opens the daemon's objects socket, replacing one a
// crashed daemon left (this process holds the metadata lock, so no live
// daemon of this store serves it). ok is false when the store has none: on
// etcd every process opens the store itself.
func (s *Store) listenObjects() (ln net.Listener, ok bool, err error) {
	if s.cfg.Metastore.Kind == "etcd" {
		return nil, false, nil
	}
	path := objectsSocket(s.cfg)
	if abs, aerr := filepath.Abs(path); aerr == nil {
		path = abs
	}
	if len(path) > maxSocketPath {
		s.log.Warn("daemon: metadata_dir's path is too long for a socket; put, get, ls, stat and rm cannot reach this daemon", "socket", path)
		return nil, false, nil
	}
	// Bound in a directory only this user can enter, made 0600 there,
	// then renamed into place (over one a crashed daemon left). Bound at
	// its path directly, the socket has the umask's mode (0777 under
	// umask 0) until a chmod, and a connection made in that window stays
	// open after it. The directory's name is shorter than the socket's,
	// so a path that fits the limit fits while bound there too.
	priv := filepath.Join(filepath.Dir(path), ".sock")
	if err := os.RemoveAll(priv); err != nil {
		return nil, false, fmt.Errorf("daemon: remove %s: %w", priv, err)
	}
	if err := os.Mkdir(priv, 0o700); err != nil {
		return nil, false, fmt.Errorf("daemon: socket directory: %w", err)
	}
	defer os.RemoveAll(priv)
	tmp := filepath.Join(priv, "s")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, false, fmt.Errorf("daemon: listen on %s: %w", path, err)
	}
	// Unlinked at path when closed (objectsListener), not at tmp.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ul.Close()
		return nil, false, fmt.Errorf("daemon: socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ul.Close()
		return nil, false, fmt.Errorf("daemon: socket %s: %w", path, err)
	}
	return &objectsListener{UnixListener: ul, path: path}, true, nil
}

// objectsListener is the objects socket's listener, bound under another
// name and renamed: its address is the socket's path, and closing it
// removes the socket there, as a Unix listener does its own.
type objectsListener struct {
	*net.UnixListener
	path string
}

func (l *objectsListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *objectsListener) Close() error {
	err := l.UnixListener.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

// objectsHandler serves the objects API over s.
func (s *Store) objectsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT "+objectPath, func(w http.ResponseWriter, r *http.Request) {
		info, err := s.Put(r.Context(), r.URL.Query().Get("name"), r.Body)
		writeObjectsReply(w, info, err)
	})
	mux.HandleFunc("GET "+objectPath, func(w http.ResponseWriter, r *http.Request) {
		rd, err := s.Open(r.Context(), r.URL.Query().Get("name"))
		if err != nil {
			writeObjectsReply(w, nil, err)
			return
		}
		defer rd.Close()
		info := rd.Info()
		raw, _ := json.Marshal(info)
		// JSON escapes the other control bytes but leaves DEL, which a
		// header value must not hold (the client refuses the reply); it
		// can only be in a string, where \u007f says the same.
		raw = bytes.ReplaceAll(raw, []byte{0x7f}, []byte(`\u007f`))
		w.Header().Set(objectInfoHeader, string(raw))
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.Header.Get("Range") != "" || r.Method == http.MethodHead {
			http.ServeContent(w, r, "", info.Modified, rd)
			return
		}
		// A whole object goes out through the Reader's WriteTo, block by
		// block (ServeContent copies it 32 KiB per read). A read error
		// cuts the reply short, which the client reports as an error.
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
		if _, err := rd.WriteTo(w); err != nil {
			s.log.Warn("daemon: get cut short", "object", info.Name, "err", err)
			panic(http.ErrAbortHandler)
		}
	})
	mux.HandleFunc("DELETE "+objectPath, func(w http.ResponseWriter, r *http.Request) {
		writeObjectsReply(w, struct{}{}, s.Delete(r.Context(), r.URL.Query().Get("name")))
	})
	mux.HandleFunc("GET "+statPath, func(w http.ResponseWriter, r *http.Request) {
		info, err := s.Stat(r.Context(), r.URL.Query().Get("name"))
		writeObjectsReply(w, info, err)
	})
	mux.HandleFunc("GET "+listPath, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		objs, next, err := s.List(r.Context(), q.Get("prefix"), q.Get("after"), limit)
		writeObjectsReply(w, listReply{Objects: objs, Next: next}, err)
	})
	return mux
}

// objectInfoHeader carries a read object's ObjectInfo (JSON).
const objectInfoHeader = "X-Healstore-Object"

type listReply struct {
	Objects []ObjectInfo `json:"objects"`
	Next    string       `json:"next"`
}

// objectsError is an objects API failure as it travels: the error's text
// and what kind of error it was, for the client to match again.
type objectsError struct {
	Error        string                     `json:"error"`
	Kind         string                     `json:"kind,omitempty"`
	Insufficient *InsufficientBackendsError `json:"insufficient,omitempty"`
}

// Kinds of objectsError, each a sentinel callers test with errors.Is.
var objectsErrorKinds = map[string]error{
	"not_found": ErrNotFound,
	"exists":    ErrExists,
	"auth":      ErrAuth,
	"closed":    ErrClosed,
	"config":    ErrBadConfig,
}

func writeObjectsReply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err == nil {
		_ = json.NewEncoder(w).Encode(v)
		return
	}
	e := objectsError{Error: err.Error()}
	code := http.StatusInternalServerError
	for kind, sentinel := range objectsErrorKinds {
		if errors.Is(err, sentinel) {
			e.Kind = kind
		}
	}
	switch e.Kind {
	case "not_found":
		code = http.StatusNotFound
	case "config":
		code = http.StatusBadRequest
	}
	var ib *InsufficientBackendsError
	if errors.As(err, &ib) {
		e.Insufficient, code = ib, http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(e)
}

// DaemonError is a failure the daemon reported for an objects call. It
// matches what the store's own error matched (ErrNotFound, ErrAuth,
// ErrInsufficientBackends, ...) under errors.Is and errors.As.
type DaemonError struct {
	Msg  string
	kind error
	ib   *InsufficientBackendsError
}

func (e *DaemonError) Error() string { return e.Msg }

// Unwrap gives the sentinel or *InsufficientBackendsError of the store's
// error.
func (e *DaemonError) Unwrap() error {
	if e.ib != nil {
		return e.ib
	}
	return e.kind
}

// DaemonObjects reaches the objects of a store whose daemon holds it, over
// the daemon's socket.
type DaemonObjects struct {
	hc     *http.Client
	socket string
}

// DialDaemonObjects connects to the objects socket of cfg's daemon and
// checks, within wait, that it answers. Any error means no daemon serves
// the store's objects now (it matches os.ErrNotExist when there is no
// socket at all, as on etcd): callers then open the store themselves.
func DialDaemonObjects(ctx context.Context, cfg *Config, wait time.Duration) (*DaemonObjects, error) {
	if cfg.Metastore.Kind == "etcd" {
		// No socket, as for a daemon that does not run: the caller opens
		// the store itself, and has nothing to say about a daemon.
		return nil, fmt.Errorf("a store on etcd has no objects socket; every process opens it itself: %w", os.ErrNotExist)
	}
	path := objectsSocket(cfg)
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	d := &DaemonObjects{socket: path, hc: &http.Client{Transport: &http.Transport{
		WriteBufferSize: transferChunk, ReadBufferSize: transferChunk,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", path)
		},
	}}}
	// A socket left by a daemon that was killed refuses the connection;
	// one whose daemon is hung or stopped accepts and never answers.
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := d.call(wctx, http.MethodGet, listPath, url.Values{"limit": {"1"}}, nil, nil); err != nil {
		d.Close()
		return nil, fmt.Errorf("daemon at %s: %w", path, err)
	}
	return d, nil
}

// Close releases the connections.
func (d *DaemonObjects) Close() error {
	d.hc.CloseIdleConnections()
	return nil
}

// Put stores r's bytes as object name, as Store.Put does in the daemon.
func (d *DaemonObjects) Put(ctx context.Context, name string, r io.Reader) (*ObjectInfo, error) {
	var info ObjectInfo
	// Sent in large chunks: the transport's own copy would cut the body
	// into 32 KiB ones, a third of the put's time on a fast disk.
	body := bufio.NewReaderSize(r, transferChunk)
	if err := d.call(ctx, http.MethodPut, objectPath, url.Values{"name": {name}}, body, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Stat describes object name.
func (d *DaemonObjects) Stat(ctx context.Context, name string) (*ObjectInfo, error) {
	var info ObjectInfo
	if err := d.call(ctx, http.MethodGet, statPath, url.Values{"name": {name}}, nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Delete removes object name.
func (d *DaemonObjects) Delete(ctx context.Context, name string) error {
	return d.call(ctx, http.MethodDelete, objectPath, url.Values{"name": {name}}, nil, nil)
}

// List is Store.List in the daemon.
func (d *DaemonObjects) List(ctx context.Context, prefix, after string, limit int) ([]ObjectInfo, string, error) {
	var rep listReply
	q := url.Values{"prefix": {prefix}, "after": {after}, "limit": {strconv.Itoa(limit)}}
	if err := d.call(ctx, http.MethodGet, listPath, q, nil, &rep); err != nil {
		return nil, "", err
	}
	return rep.Objects, rep.Next, nil
}

// DaemonReader reads one object from the daemon, from start to end.
type DaemonReader struct {
	body io.ReadCloser
	info ObjectInfo
	left int64
}

// Open starts reading object name.
func (d *DaemonObjects) Open(ctx context.Context, name string) (*DaemonReader, error) {
	resp, err := d.do(ctx, http.MethodGet, objectPath, url.Values{"name": {name}}, nil)
	if err != nil {
		return nil, err
	}
	r := &DaemonReader{body: resp.Body, left: resp.ContentLength}
	if err := json.Unmarshal([]byte(resp.Header.Get(objectInfoHeader)), &r.info); err != nil || r.left != r.info.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("get %q from the daemon: its reply does not describe the object (%d bytes announced)", name, resp.ContentLength)
	}
	return r, nil
}

// Size is the object's length.
func (r *DaemonReader) Size() int64 { return r.info.Size }

// Info describes the object being read.
func (r *DaemonReader) Info() *ObjectInfo { return &r.info }

// Read implements io.Reader. A reply cut short (the daemon failed to read
// a block, or stopped) is an error, never a short object.
func (r *DaemonReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.body.Read(p)
	r.left -= int64(n)
	if errors.Is(err, io.EOF) && r.left > 0 {
		err = fmt.Errorf("get %q from the daemon: the reply ended %d bytes short: %w", r.info.Name, r.left, io.ErrUnexpectedEOF)
	} else if errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("get %q from the daemon: %w", r.info.Name, err)
	}
	return n, err
}

// WriteTo implements io.WriterTo, in large chunks.
func (r *DaemonReader) WriteTo(w io.Writer) (int64, error) {
	return io.CopyBuffer(w, struct{ io.Reader }{r}, make([]byte, transferChunk))
}

// Close ends the read.
func (r *DaemonReader) Close() error { return r.body.Close() }

// transferChunk is the size of the socket's reads and writes.
const transferChunk = 1 << 20

// call runs one request and decodes its JSON reply into out (nil: none
// wanted).
func (d *DaemonObjects) call(ctx context.Context, method, path string, q url.Values, body io.Reader, out any) error {
	resp, err := d.do(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("daemon at %s: %s reply: %w", d.socket, path, err)
	}
	return nil
}

// do sends one request; a reply other than 2xx becomes a *DaemonError.
func (d *DaemonObjects) do(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://healstore"+path+"?"+q.Encode(), body)
	if err != nil {
		return nil, err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon at %s: %w", d.socket, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var e objectsError
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Error == "" {
		return nil, fmt.Errorf("daemon at %s: %s %s: %s", d.socket, method, path, resp.Status)
	}
	de := &DaemonError{Msg: e.Error, kind: objectsErrorKinds[e.Kind], ib: e.Insufficient}
	return nil, de
}
