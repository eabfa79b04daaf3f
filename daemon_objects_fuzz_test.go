package healstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// replyTransport answers every request with one canned reply.
type replyTransport struct {
	status int
	header string
	body   []byte
	length int64
}

func (r replyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h := http.Header{}
	if r.header != "" {
		h.Set(objectInfoHeader, r.header)
	}
	return &http.Response{StatusCode: r.status, Header: h, Body: io.NopCloser(bytes.NewReader(r.body)),
		ContentLength: r.length, Request: req}, nil
}

// FuzzDaemonReply: whatever a daemon (or whatever listens on its socket)
// answers, the client neither panics nor hands back an object of another
// length than the one it announced: a get reads exactly the described
// size or fails.
func FuzzDaemonReply(f *testing.F) {
	f.Add(200, `{"name":"a","size":3}`, []byte("abc"), int64(3))
	f.Add(200, `{"name":"a","size":5}`, []byte("abc"), int64(5))
	f.Add(404, "", []byte(`{"error":"open: object \"a\": object not found","kind":"not_found"}`), int64(-1))
	f.Add(503, "", []byte(`{"error":"x","insufficient":{"Op":"read","Usable":1,"Needed":4}}`), int64(-1))
	f.Add(200, "", []byte(`{"objects":[{"name":"a"}],"next":"a"}`), int64(-1))
	f.Add(500, "", []byte("not json"), int64(8))
	f.Fuzz(func(t *testing.T, status int, header string, body []byte, length int64) {
		if status < 100 || status > 999 {
			return
		}
		d := &DaemonObjects{socket: "fuzz", hc: &http.Client{Transport: replyTransport{status, header, body, length}}}
		ctx := context.Background()
		_, _ = d.Stat(ctx, "a")
		_, _, _ = d.List(ctx, "", "", 10)
		_ = d.Delete(ctx, "a")
		if _, err := d.Put(ctx, "a", strings.NewReader("abc")); err != nil {
			var de *DaemonError
			if errors.As(err, &de) && de.Msg == "" {
				t.Fatalf("an error without text: %#v", de)
			}
		}
		r, err := d.Open(ctx, "a")
		if err != nil {
			return
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err == nil && int64(len(got)) != r.Size() {
			t.Fatalf("read %d bytes of an object of %d without an error", len(got), r.Size())
		}
	})
}
