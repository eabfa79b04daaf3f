package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
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
		// Generous: 64 MiB through the race detector takes seconds.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		v, err := b.Get(ctx, "k")
		cancel()
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

// A server may ignore the Range header and send the whole object (HTTP
// allows it): GetRange must cut the range out, not return the object. A
// partial answer that is not the range asked for is corrupt.
func TestGetRangeAnswers(t *testing.T) {
	obj := []byte("0123456789")
	for _, c := range []struct {
		name, contentRange string
		body               []byte
		want               string // "" with corrupt: ErrCorruptReply
		corrupt            bool
	}{
		{name: "range ignored", body: obj, want: "234"},
		{name: "right range", contentRange: "bytes 2-4/10", body: obj[2:5], want: "234"},
		{name: "wrong start", contentRange: "bytes 0-2/10", body: obj[0:3], corrupt: true},
		{name: "too long", contentRange: "bytes 2-6/10", body: obj[2:7], corrupt: true},
		{name: "length mismatch", contentRange: "bytes 2-4/10", body: obj[2:4], corrupt: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := hostileS3(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
				w.Header().Set("ETag", `"x"`)
				w.Header().Set("Content-Length", strconv.Itoa(len(c.body)))
				status := http.StatusOK
				if c.contentRange != "" {
					w.Header().Set("Content-Range", c.contentRange)
					status = http.StatusPartialContent
				}
				w.WriteHeader(status)
				w.Write(c.body)
			})
			v, err := b.GetRange(ctx5(t), "k", 2, 3)
			if c.corrupt {
				if !errors.Is(err, backends.ErrCorruptReply) {
					t.Fatalf("GetRange 2+3 answered %q %q: %q, %v; want ErrCorruptReply", c.contentRange, c.body, v, err)
				}
				return
			}
			if err != nil || !bytes.Equal(v, []byte(c.want)) {
				t.Fatalf("GetRange 2+3 answered %q %q: %q, %v; want %q", c.contentRange, c.body, v, err, c.want)
			}
		})
	}
}

// A size the server does not give, or gives negative, is no size: Stat and
// List must not hand it on.
func TestNegativeSizes(t *testing.T) {
	b := hostileS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(http.StatusOK) // HEAD without Content-Length
	})
	if n, err := b.Stat(ctx5(t), "k"); !errors.Is(err, backends.ErrCorruptReply) {
		t.Fatalf("Stat of an object without a Content-Length: %d, %v", n, err)
	}
}

// A server that sends a body a byte at a time must not hold Get past its
// deadline.
func TestSlowBodyHonoursDeadline(t *testing.T) {
	b := hostileS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.Header().Set("ETag", `"x"`)
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		for i := 0; i < 1000; i++ {
			if _, err := w.Write([]byte{'x'}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Get(ctx, "k")
	if !errors.Is(err, backends.ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Fatalf("Get of a body sent a byte at a time: %v after %v", err, time.Since(start))
	}
}

func TestListNegativeSize(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><Prefix></Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Contents><Key>k</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"x"</ETag><Size>-5</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>`))
	}))
	t.Cleanup(srv.Close)
	spec := backends.Spec{Name: "s3-hostile", Kind: backends.KindS3, Address: strings.TrimPrefix(srv.URL, "http://"),
		Bucket: "bkt", AccessKey: "access", SecretRef: "s3"}
	b, err := Open(ctx5(t), spec, "secret-key-value")
	if err != nil {
		t.Fatal(err)
	}
	err = b.List(ctx5(t), "", func(k string, n int64) error {
		t.Fatalf("List gave %s of size %d", k, n)
		return nil
	})
	if !errors.Is(err, backends.ErrCorruptReply) {
		t.Fatalf("List of an object with size -5: %v", err)
	}
}

// A listing page without end is cut off at maxResponseBody and reported
// corrupt, not decoded into memory until the deadline.
func TestListEndlessPage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><Contents><Key>`))
		chunk := bytes.Repeat([]byte("a"), 1<<20)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	spec := backends.Spec{Name: "s3-hostile", Kind: backends.KindS3, Address: strings.TrimPrefix(srv.URL, "http://"),
		Bucket: "bkt", AccessKey: "access", SecretRef: "s3"}
	b, err := Open(ctx5(t), spec, "secret-key-value")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the race detector's pace
	defer cancel()
	start := time.Now()
	err = b.List(ctx, "", func(string, int64) error { return nil })
	if !errors.Is(err, backends.ErrCorruptReply) {
		t.Fatalf("List of an endless page: %v after %v", err, time.Since(start))
	}
}

// listReply is one ListObjectsV2 answer of listingS3.
type listReply struct {
	keys      []string
	next      string // NextContinuationToken
	truncated bool   // IsTruncated
}

// more is a truncated reply with keys and the next token.
func more(next string, keys ...string) listReply {
	return listReply{keys: keys, next: next, truncated: true}
}

// last is the final reply of a listing.
func last(keys ...string) listReply { return listReply{keys: keys} }

// listingS3 is a fake S3 endpoint whose ListObjectsV2 answers come from
// page, given the continuation token asked with ("" for the first page).
// It counts the listing requests.
func listingS3(t *testing.T, page func(token string) listReply) (*Backend, *atomic.Int32) {
	t.Helper()
	var lists atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead || r.URL.Query().Get("list-type") != "2" {
			return
		}
		lists.Add(1)
		p := page(r.URL.Query().Get("continuation-token"))
		var body strings.Builder
		fmt.Fprintf(&body, `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><Prefix></Prefix><KeyCount>%d</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>%v</IsTruncated>`,
			len(p.keys), p.truncated)
		if p.next != "" {
			fmt.Fprintf(&body, `<NextContinuationToken>%s</NextContinuationToken>`, p.next)
		}
		for _, k := range p.keys {
			fmt.Fprintf(&body, `<Contents><Key>%s</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"x"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>`, k)
		}
		body.WriteString(`</ListBucketResult>`)
		w.Header().Set("Content-Type", "application/xml")
		w.Write([]byte(body.String()))
	}))
	t.Cleanup(srv.Close)
	spec := backends.Spec{Name: "s3-hostile", Kind: backends.KindS3, Address: strings.TrimPrefix(srv.URL, "http://"),
		Bucket: "bkt", AccessKey: "access", SecretRef: "s3", Quota: 1 << 30}
	b, err := Open(ctx5(t), spec, "secret-key-value")
	if err != nil {
		t.Fatal(err)
	}
	return b, &lists
}

// A server that answers IsTruncated with the same continuation token again
// made the walk take the same page for ever. The walk must end at the
// first key of the repeated page, with an error naming the server, the
// bucket and the key, and hand no key on twice.
func TestListRepeatedToken(t *testing.T) {
	for name, c := range map[string]struct {
		page []string
		key  string
	}{
		"page of two": {[]string{"a", "b"}, `"a" went backwards after "b"`},
		"page of one": {[]string{"a"}, `"a" repeated after "a"`},
	} {
		t.Run(name, func(t *testing.T) {
			b, lists := listingS3(t, func(string) listReply { return more("same-token", c.page...) })
			seen := map[string]int{}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := b.List(ctx, "", func(k string, n int64) error {
				seen[k]++
				if seen[k] > 1 {
					return fmt.Errorf("key %s handed on twice", k)
				}
				return nil
			})
			if !errors.Is(err, backends.ErrCorruptReply) || !errors.Is(err, errListOrder) {
				t.Fatalf("List of a listing that repeats its token: %v; want ErrCorruptReply", err)
			}
			for _, want := range []string{b.cl.EndpointURL().Host, "bucket bkt", c.key} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error does not name %s: %v", want, err)
				}
			}
			// The page and its repeat: the walk fetches the next page
			// only when it is done with this one. Without the check
			// the requests go on until the deadline.
			if n := lists.Load(); n != 2 {
				t.Fatalf("%d listing requests; want the page and its repeat", n)
			}
			// The usage count behind a quota walks the same way.
			if _, err := b.Probe(ctx); !errors.Is(err, backends.ErrCorruptReply) {
				t.Fatalf("Probe counting usage over a repeating listing: %v", err)
			}
		})
	}
}

// A later page that goes back before the previous one fails the same way;
// pages that ascend, across tokens, pass.
func TestListPagesAscend(t *testing.T) {
	pages := map[string]listReply{
		"":   more("t1", "shards/0a.1", "shards/0a.10"),
		"t1": more("t2", "shards/0a.2", "shards/0b.1"),
		"t2": last("shards/0c.1"),
	}
	b, _ := listingS3(t, func(tok string) listReply { return pages[tok] })
	var got []string
	err := b.List(ctx5(t), "", func(k string, n int64) error { got = append(got, k); return nil })
	if err != nil || strings.Join(got, " ") != "shards/0a.1 shards/0a.10 shards/0a.2 shards/0b.1 shards/0c.1" {
		t.Fatalf("List of ascending pages: %v, %v", got, err)
	}

	pages["t2"] = last("shards/0a.3")
	err = b.List(ctx5(t), "", func(string, int64) error { return nil })
	if !errors.Is(err, backends.ErrCorruptReply) || !strings.Contains(err.Error(), `"shards/0a.3" went backwards after "shards/0b.1"`) {
		t.Fatalf("List of a page going back: %v", err)
	}
}

// A server answering IsTruncated with pages that hold no keys, for ever or
// with its own token again, made the walk send requests until its deadline
// and report only that the deadline passed. It must end at once with an
// error naming the server, the bucket and what was wrong; the usage count
// behind a quota walks the same way.
func TestListNoProgress(t *testing.T) {
	for name, c := range map[string]struct {
		page  func(n int, token string) listReply // n counts the requests from 1
		lists int32
		want  string
	}{
		"empty pages, new token each time": {
			page:  func(n int, _ string) listReply { return more(fmt.Sprintf("t%d", n)) },
			lists: maxEmptyPages + 1,
			want:  fmt.Sprintf("%d truncated pages in a row held no keys", maxEmptyPages+1),
		},
		"empty pages, same token": {
			page:  func(int, string) listReply { return more("same") },
			lists: 2,
			want:  `page 2 answered continuation token "same" with the same token`,
		},
		"keys, then the same token on an empty page": {
			page: func(_ int, token string) listReply {
				if token == "" {
					return more("t1", "a", "b")
				}
				return more(token)
			},
			lists: 2,
			want:  `page 2 answered continuation token "t1" with the same token`,
		},
		"tokens that go round": {
			page: func(_ int, token string) listReply {
				if token == "t1" {
					return more("t2")
				}
				return more("t1")
			},
			lists: maxEmptyPages + 1,
			want:  fmt.Sprintf("%d truncated pages in a row held no keys", maxEmptyPages+1),
		},
	} {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int32
			b, lists := listingS3(t, func(token string) listReply { return c.page(int(n.Add(1)), token) })
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			var got []string
			err := b.List(ctx, "", func(k string, _ int64) error { got = append(got, k); return nil })
			if !errors.Is(err, backends.ErrCorruptReply) || !errors.Is(err, errListStall) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("List of a listing that makes no progress: %v (after keys %q, %d requests); want ErrCorruptReply at once", err, got, lists.Load())
			}
			for _, want := range []string{b.cl.EndpointURL().Host, "bucket bkt", "made no progress", c.want} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error does not name %q: %v", want, err)
				}
			}
			if l := lists.Load(); l != c.lists {
				t.Fatalf("%d listing requests; want %d", l, c.lists)
			}
			n.Store(0)
			if _, err := b.Probe(ctx); !errors.Is(err, backends.ErrCorruptReply) || !errors.Is(err, errListStall) {
				t.Fatalf("Probe counting usage over a listing that makes no progress: %v", err)
			}
		})
	}
}

// A truncated page without a continuation token cannot be followed: the
// walk fails at once (minio-go checks this one itself).
func TestListTruncatedWithoutToken(t *testing.T) {
	b, lists := listingS3(t, func(string) listReply { return listReply{keys: []string{"a"}, truncated: true} })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := b.List(ctx, "", func(string, int64) error { return nil })
	if !errors.Is(err, backends.ErrCorruptReply) || errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "bucket bkt") {
		t.Fatalf("List of a truncated page without a token: %v", err)
	}
	if l := lists.Load(); l != 1 {
		t.Fatalf("%d listing requests; want 1", l)
	}
}

// A real server may answer a truncated page without keys now and then:
// up to maxEmptyPages of them in a row, between pages of keys, still list
// every key.
func TestListEmptyPagesThenKeys(t *testing.T) {
	pages := map[string]listReply{"": more("e1")}
	for i := 1; i < maxEmptyPages; i++ {
		pages[fmt.Sprintf("e%d", i)] = more(fmt.Sprintf("e%d", i+1))
	}
	pages[fmt.Sprintf("e%d", maxEmptyPages)] = more("k1", "shards/0a.1", "shards/0a.2")
	pages["k1"] = more("f1")
	pages["f1"] = more("k2")
	pages["k2"] = more("f2", "shards/0b.1")
	pages["f2"] = last()
	b, lists := listingS3(t, func(tok string) listReply { return pages[tok] })
	var got []string
	err := b.List(ctx5(t), "", func(k string, _ int64) error { got = append(got, k); return nil })
	if err != nil || strings.Join(got, " ") != "shards/0a.1 shards/0a.2 shards/0b.1" {
		t.Fatalf("List across empty truncated pages: %q, %v", got, err)
	}
	if l := lists.Load(); l != int32(len(pages)) {
		t.Fatalf("%d listing requests; want %d", l, len(pages))
	}
}

// The walk's pages go through a client whose requests minio-go makes
// without a context: a listing request the server never answers must
// still end at the walk's deadline.
func TestListHonoursDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		select { // never answer, until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close waits for the handler
	spec := backends.Spec{Name: "s3-hostile", Kind: backends.KindS3, Address: strings.TrimPrefix(srv.URL, "http://"),
		Bucket: "bkt", AccessKey: "access", SecretRef: "s3"}
	b, err := Open(ctx5(t), spec, "secret-key-value")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = b.List(ctx, "", func(string, int64) error { return nil })
	if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("List from a server that never answers: %v after %v", err, time.Since(start))
	}
}
