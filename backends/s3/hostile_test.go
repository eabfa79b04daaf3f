package s3

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// hostileS3 is a fake S3 endpoint: bucket requests succeed, object GETs
// and HEADs are answered by get.
func hostileS3(t *testing.T, get http.HandlerFunc) *Backend {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0 {
			w.WriteHeader(http.StatusOK) // HEAD bucket: it exists
			return
		}
		get(w, r)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	spec := backends.Spec{Name: "s3-hostile", Kind: backends.KindS3, Address: strings.TrimPrefix(srv.URL, "http://"),
		Bucket: "bkt", AccessKey: "access", SecretRef: "s3"}
	b, err := Open(ctx, spec, "secret-key-value")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// An object larger than any value this backend writes is not read into
// memory whole: Get fails instead of allocating whatever the server sends,
// whether it says how much that is or streams without end.
func TestGetRefusesOversizedObject(t *testing.T) {
	size := int64(MaxValueSize + 1)
	for _, endless := range []bool{false, true} {
		b := hostileS3(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.Header().Set("ETag", `"x"`)
			if !endless {
				w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			}
			if r.Method == http.MethodHead {
				return
			}
			chunk := make([]byte, 1<<20)
			for n := int64(0); endless || n < size; n += int64(len(chunk)) {
				c := chunk
				if !endless && size-n < int64(len(c)) {
					c = c[:size-n]
				}
				if _, err := w.Write(c); err != nil {
					return
				}
			}
		})
		v, err := b.Get(ctx5(t), "k")
		if !errors.Is(err, backends.ErrCorruptReply) {
			t.Fatalf("Get of a %d byte object (endless %v): %d bytes, %v", size, endless, len(v), err)
		}
	}
}

// An object shorter than its Content-Length is a failed read, not a value.
func TestGetShortBody(t *testing.T) {
	b := hostileS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.Header().Set("ETag", `"x"`)
		if r.Method == http.MethodHead {
			return
		}
		w.Write(make([]byte, 50))
		if hj, ok := w.(http.Hijacker); ok {
			c, _, _ := hj.Hijack()
			c.Close()
		}
	})
	v, err := b.Get(ctx5(t), "k")
	if err == nil || errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("Get of an object cut short: %d bytes, %v", len(v), err)
	}
}
