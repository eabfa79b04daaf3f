package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MaxValueSize is the largest value: a 64 MiB block's shard plus generous
// room for its header and seal. S3 itself takes 5 GiB in one PUT.
const MaxValueSize = 64<<20 + 64<<10

// RecountInterval is how long a quota's usage count is trusted before it is
// counted again by listing.
const RecountInterval = 10 * time.Minute

// Backend is one bucket and prefix. Safe for concurrent use.
type Backend struct {
	name   string
	bucket string
	prefix string // "" or ending in '/'
	region string
	quota  int64
	cl     *minio.Client
	// addr and opts make the client of each walk (see lister).
	addr string
	opts minio.Options
	// listPage is the keys asked for per listing page; 0 leaves it to
	// the server (1000). Tests set it small to walk many pages.
	listPage int

	mu        sync.Mutex // guards the quota bookkeeping
	used      int64
	usedKnown bool
	countedAt time.Time
	closed    bool
}

var _ backends.Backend = (*Backend)(nil)

// Open returns a backend for the spec's bucket and prefix, creating the
// bucket when it is missing. secretKey is the S3 secret for spec.AccessKey.
// Wrong credentials fail Open with ErrAuth; an unreachable server does not
// (the backend is returned and calls report ErrUnavailable until it answers).
func Open(ctx context.Context, spec backends.Spec, secretKey string) (*Backend, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.Kind != backends.KindS3 {
		return nil, fmt.Errorf("backend %s: s3.Open given kind %q", spec.Name, spec.Kind)
	}
	region := spec.Region
	if region == "" {
		region = "us-east-1"
	}
	tr, err := minio.DefaultTransport(spec.TLS)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", spec.Name, err)
	}
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = 0 // ctx bounds every call
	opts := minio.Options{
		Creds:     credentials.NewStaticV4(spec.AccessKey, secretKey, ""),
		Secure:    spec.TLS,
		Region:    region,
		Transport: capTransport{tr},
		// One retry at most: the store retries on other backends and
		// hedges slow reads, and a dead server must fail fast.
		MaxRetries:   2,
		BucketLookup: minio.BucketLookupPath,
	}
	cl, err := minio.New(spec.Address, &opts)
	if err != nil {
		return nil, fmt.Errorf("backend %s: s3 client for %s: %w", spec.Name, spec.Address, err)
	}
	b := &Backend{name: spec.Name, bucket: spec.Bucket, region: region, quota: spec.Quota, cl: cl,
		addr: spec.Address, opts: opts}
	if p := strings.Trim(spec.Prefix, "/"); p != "" {
		b.prefix = encodeKey(p) + "/"
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := b.ensureBucket(pctx); err != nil && errors.Is(err, backends.ErrAuth) {
		return nil, err
	}
	return b, nil
}

// ensureBucket creates the bucket when it does not exist.
func (b *Backend) ensureBucket(ctx context.Context) error {
	ok, err := b.cl.BucketExists(ctx, b.bucket)
	if err != nil {
		return b.fail(ctx, "probe", "", err)
	}
	if ok {
		return nil
	}
	err = b.cl.MakeBucket(ctx, b.bucket, minio.MakeBucketOptions{Region: b.region})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		err = nil
	}
	if err != nil {
		return b.fail(ctx, "create bucket", "", err)
	}
	return nil
}

// encodeKey escapes the path segments a file-path server cannot hold.
func encodeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		switch s {
		case "":
			segs[i] = "%"
		case ".":
			segs[i] = "%2E"
		case "..":
			segs[i] = "%2E%2E"
		}
	}
	return strings.Join(segs, "/")
}

func decodeKey(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		switch s {
		case "%":
			segs[i] = ""
		case "%2E":
			segs[i] = "."
		case "%2E%2E":
			segs[i] = ".."
		}
	}
	return strings.Join(segs, "/")
}

func (b *Backend) object(key string) string { return b.prefix + encodeKey(key) }

// Name implements backends.Backend.
func (b *Backend) Name() string { return b.name }

// errBadSize marks a size from the server that cannot be one: a negative
// object size, or a response body longer than any answer can be.
var errBadSize = errors.New("bad object size")

// errListOrder marks a listing whose keys do not ascend. ListObjectsV2
// returns keys in strictly ascending UTF-8 binary order; a server answering
// IsTruncated with the same token again would otherwise have the walk take
// the same page for ever, and usage counts and the orphan sweep with it.
var errListOrder = errors.New("listing out of order")

// errListStall marks a listing that goes on without progress: truncated
// pages that hold no keys, or a continuation token answered with itself.
// Without it such a server kept a walk sending requests until its deadline.
var errListStall = errors.New("listing made no progress")

// maxEmptyPages is how many truncated pages without keys a walk takes in a
// row. ListObjectsV2 lets a page hold fewer keys than asked for, none
// included, and a real server may send such a page now and then; a run
// longer than this is a server that will not move on.
const maxEmptyPages = 3

// maxResponseBody bounds every response body: the largest value and room
// for a listing page (1000 keys, well under 1 MiB of XML).
const maxResponseBody = MaxValueSize + 1<<20

// capTransport fails the read of any response body past maxResponseBody.
// minio-go decodes a listing page (and drains an error body) from the
// stream however long it is: a broken or hostile server sending one
// endless page grew memory by hundreds of MB a second until the deadline.
type capTransport struct{ rt http.RoundTripper }

func (t capTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil && resp.Body != nil {
		resp.Body = &cappedBody{rc: resp.Body, left: maxResponseBody}
	}
	return resp, err
}

type cappedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: response body over %d bytes", errBadSize, maxResponseBody)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// kindOf classifies an error from minio-go.
func kindOf(err error) error {
	if errors.Is(err, errBadSize) || errors.Is(err, errListOrder) || errors.Is(err, errListStall) {
		return backends.ErrCorruptReply
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "NoSuchKey", "NoSuchBucket", "NotFound":
			return backends.ErrNotFound
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
			"ExpiredToken", "AllAccessDisabled", "AuthorizationHeaderMalformed", "InvalidSecurity":
			return backends.ErrAuth
		case "EntityTooLarge":
			return backends.ErrTooLarge
		case "XMinioStorageFull", "StorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded", "InsufficientStorage":
			return backends.ErrFull
		case "SlowDown", "SlowDownRead", "SlowDownWrite", "ServiceUnavailable", "InternalError",
			"RequestTimeout", "XMinioServerNotInitialized", "OperationAborted":
			return backends.ErrUnavailable
		}
		if strings.Contains(er.Code, "Quota") {
			return backends.ErrFull
		}
		switch {
		case er.StatusCode == http.StatusForbidden, er.StatusCode == http.StatusUnauthorized:
			return backends.ErrAuth
		case er.StatusCode == http.StatusNotFound:
			return backends.ErrNotFound
		case er.StatusCode == http.StatusInsufficientStorage:
			return backends.ErrFull
		case er.StatusCode >= 500, er.StatusCode == http.StatusTooManyRequests, er.StatusCode == http.StatusRequestTimeout:
			return backends.ErrUnavailable
		case er.StatusCode == 0 && er.Code == "":
			// Not a server answer at all (minio-go wraps transport
			// failures too); fall through to the transport checks.
		default:
			return backends.ErrCorruptReply
		}
	}
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return backends.ErrUnavailable
	case errors.As(err, &ue), errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return backends.ErrUnavailable
	case errors.Is(err, syscall.ENOSPC):
		return backends.ErrFull
	}
	return backends.ErrUnavailable
}

// fail wraps err, adding ctx's error so callers can match it too.
func (b *Backend) fail(ctx context.Context, op, key string, err error) error {
	if ce := ctx.Err(); ce != nil && !errors.Is(err, ce) {
		err = errors.Join(ce, err)
	}
	return backends.Wrap(b.name, op, key, kindOf(err), err)
}

// begin checks the key and ctx shared by every keyed call.
func (b *Backend) begin(ctx context.Context, op, key string) error {
	if err := backends.CheckKey(key); err != nil {
		return backends.InvalidKey(b.name, op, key, err)
	}
	return b.ready(ctx, op, key)
}

func (b *Backend) ready(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return backends.Wrap(b.name, op, key, backends.ErrUnavailable, err)
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return backends.Errorf(b.name, op, key, backends.ErrUnavailable, "backend is closed")
	}
	return nil
}

// Put implements backends.Backend.
func (b *Backend) Put(ctx context.Context, key string, value []byte) error {
	if err := b.begin(ctx, "put", key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return backends.Errorf(b.name, "put", key, backends.ErrTooLarge, "%d bytes, the limit is %d", len(value), MaxValueSize)
	}
	var delta int64
	if b.quota > 0 {
		old, err := b.Stat(ctx, key)
		if err != nil && !errors.Is(err, backends.ErrNotFound) {
			return err
		}
		delta = int64(len(value)) - old
		if err := b.reserve(ctx, key, delta); err != nil {
			return err
		}
	}
	err := b.put(ctx, key, value)
	if err != nil && kindOf(err) == backends.ErrNotFound {
		// The bucket is gone (wiped, or never made because the server was
		// down at Open): make it and try once more.
		if berr := b.ensureBucket(ctx); berr == nil {
			err = b.put(ctx, key, value)
		}
	}
	if err != nil {
		b.release(delta)
		return b.fail(ctx, "put", key, err)
	}
	return nil
}

func (b *Backend) put(ctx context.Context, key string, value []byte) error {
	_, err := b.cl.PutObject(ctx, b.bucket, b.object(key), bytes.NewReader(value), int64(len(value)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	return err
}

// Get implements backends.Backend.
func (b *Backend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := b.begin(ctx, "get", key); err != nil {
		return nil, err
	}
	v, _, err := b.get(ctx, key, minio.GetObjectOptions{})
	return v, err
}

// get reads an object, returning the response headers too (GetRange needs
// Content-Range).
func (b *Backend) get(ctx context.Context, key string, opts minio.GetObjectOptions) ([]byte, http.Header, error) {
	obj, _, hdr, err := minio.Core{Client: b.cl}.GetObject(ctx, b.bucket, b.object(key), opts)
	if err != nil {
		return nil, nil, b.fail(ctx, "get", key, err)
	}
	defer obj.Close()
	// No value this backend writes is larger than MaxValueSize: read one
	// byte past it at most, so a huge or endless object (someone else's,
	// or a broken server) cannot take all memory before the check.
	v, err := io.ReadAll(io.LimitReader(obj, MaxValueSize+1))
	if err != nil {
		return nil, nil, b.fail(ctx, "get", key, err)
	}
	if len(v) > MaxValueSize {
		return nil, nil, backends.Errorf(b.name, "get", key, backends.ErrCorruptReply,
			"object is larger than the %d bytes a value can hold", MaxValueSize)
	}
	if v == nil {
		v = []byte{}
	}
	return v, hdr, nil
}

// GetRange implements backends.Backend with an HTTP range.
func (b *Backend) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if err := b.begin(ctx, "get", key); err != nil {
		return nil, err
	}
	if off < 0 || length < 0 {
		return nil, backends.Errorf(b.name, "get", key, backends.ErrInvalidKey, "negative range %d+%d", off, length)
	}
	if length == 0 {
		if _, err := b.Stat(ctx, key); err != nil {
			return nil, err
		}
		return []byte{}, nil
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+length-1); err != nil {
		return nil, backends.Errorf(b.name, "get", key, backends.ErrInvalidKey, "range %d+%d: %v", off, length, err)
	}
	v, hdr, err := b.get(ctx, key, opts)
	var er minio.ErrorResponse
	if err != nil && errors.As(err, &er) && (er.Code == "InvalidRange" || er.StatusCode == http.StatusRequestedRangeNotSatisfiable) {
		// The object exists (S3 checks that first) and off is past its
		// end, or it is empty.
		return []byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	cr := hdr.Get("Content-Range")
	if cr == "" {
		// HTTP lets a server ignore Range and send the whole object; the
		// range is then ours to cut.
		if off >= int64(len(v)) {
			return []byte{}, nil
		}
		return v[off:min(int64(len(v)), off+length)], nil
	}
	// A partial answer must be the bytes asked for: the range starting at
	// off, no longer than length.
	var first, last int64
	if n, _ := fmt.Sscanf(cr, "bytes %d-%d/", &first, &last); n != 2 || first != off ||
		last-first+1 != int64(len(v)) || int64(len(v)) > length {
		return nil, backends.Errorf(b.name, "get", key, backends.ErrCorruptReply,
			"asked for bytes %d+%d, got %d bytes as %q", off, length, len(v), cr)
	}
	return v, nil
}

// Stat implements backends.Backend.
func (b *Backend) Stat(ctx context.Context, key string) (int64, error) {
	if err := b.begin(ctx, "stat", key); err != nil {
		return 0, err
	}
	info, err := b.cl.StatObject(ctx, b.bucket, b.object(key), minio.StatObjectOptions{})
	if err != nil {
		return 0, b.fail(ctx, "stat", key, err)
	}
	if info.Size < 0 {
		// minio-go's -1 for a HEAD without Content-Length, or a
		// negative one: not a size.
		return 0, backends.Errorf(b.name, "stat", key, backends.ErrCorruptReply, "object size %d", info.Size)
	}
	return info.Size, nil
}

// Delete implements backends.Backend. S3 deletes of missing keys succeed.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := b.begin(ctx, "delete", key); err != nil {
		return err
	}
	var size int64
	if b.quota > 0 {
		n, err := b.Stat(ctx, key)
		if errors.Is(err, backends.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		size = n
	}
	err := b.cl.RemoveObject(ctx, b.bucket, b.object(key), minio.RemoveObjectOptions{})
	if err != nil && kindOf(err) != backends.ErrNotFound {
		return b.fail(ctx, "delete", key, err)
	}
	b.release(size)
	return nil
}

// List implements backends.Backend. The server filters by the prefix's
// complete path segments (they escape exactly); the rest is filtered here.
func (b *Backend) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	if err := b.ready(ctx, "list", prefix); err != nil {
		return err
	}
	err := b.walk(ctx, prefix, func(key string, size int64) error {
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		if err := fn(key, size); err != nil {
			return stopWalk{err}
		}
		return nil
	})
	var sw stopWalk
	if errors.As(err, &sw) {
		return sw.err
	}
	if err != nil {
		return b.fail(ctx, "list", prefix, err)
	}
	return nil
}

type stopWalk struct{ err error }

func (s stopWalk) Error() string { return s.err.Error() }

// walk calls fn for each object under the server-side prefix for prefix,
// page by page. It drives the pages itself, not through ListObjects: that
// follows continuation tokens out of sight and yields only keys, so a
// server answering truncated pages without keys looped it unseen until the
// deadline.
func (b *Backend) walk(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	server := b.prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		server += encodeKey(prefix[:i]) + "/"
	}
	core, err := b.lister(ctx)
	if err != nil {
		return err
	}
	host := b.cl.EndpointURL().Host
	var prev, token string
	first := true
	empty := 0 // truncated pages in a row without keys
	for page := 1; ; page++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := core.ListObjectsV2(b.bucket, server, "", token, "", b.listPage)
		if err != nil {
			if kindOf(err) == backends.ErrNotFound {
				return nil // no bucket: nothing stored
			}
			return fmt.Errorf("s3 listing of bucket %s at %s, page %d: %w", b.bucket, host, page, err)
		}
		for _, obj := range res.Contents {
			// Every key must be greater than the one before, so a
			// server repeating a page (or going back) ends the walk at
			// its first key instead of feeding fn the same keys
			// without end.
			if !first && obj.Key <= prev {
				what := "repeated"
				if obj.Key < prev {
					what = "went backwards"
				}
				return fmt.Errorf("%w: s3 %s bucket %s: listing key %q %s after %q (keys must ascend; a server repeating a page would loop for ever)",
					errListOrder, host, b.bucket, obj.Key, what, prev)
			}
			prev, first = obj.Key, false
			if obj.Size < 0 {
				return fmt.Errorf("%w: listing gave %s a size of %d", errBadSize, obj.Key, obj.Size)
			}
			name, ok := strings.CutPrefix(obj.Key, b.prefix)
			if !ok || strings.HasSuffix(name, "/") {
				continue // a "directory" marker some servers list
			}
			if err := fn(decodeKey(name), obj.Size); err != nil {
				return err
			}
		}
		if !res.IsTruncated {
			return nil
		}
		// minio-go fails a truncated page without a next token itself.
		// The same token again asks for the same page again: no server
		// that makes progress answers so, even with keys on the page.
		if token != "" && res.NextContinuationToken == token {
			return fmt.Errorf("%w: s3 listing of bucket %s at %s made no progress: page %d answered continuation token %.64q with the same token",
				errListStall, b.bucket, host, page, token)
		}
		if len(res.Contents) == 0 {
			empty++
		} else {
			empty = 0
		}
		if empty > maxEmptyPages {
			return fmt.Errorf("%w: s3 listing of bucket %s at %s made no progress: %d truncated pages in a row held no keys (pages %d to %d)",
				errListStall, b.bucket, host, empty, page-empty+1, page)
		}
		token = res.NextContinuationToken
	}
}

// lister returns a client for one walk's listing requests. The page-level
// Core.ListObjectsV2 sends its requests with context.Background(), so the
// client's transport puts ctx on each one instead: the walk's deadline and
// cancel still end a request in flight. (minio-go, not seeing ctx, then
// still waits out its retry backoff, under a second, before it gives up.)
// The client shares the backend's transport and so its connections.
func (b *Backend) lister(ctx context.Context) (minio.Core, error) {
	opts := b.opts
	opts.Transport = ctxTransport{ctx: ctx, rt: b.opts.Transport}
	cl, err := minio.New(b.addr, &opts)
	if err != nil {
		return minio.Core{}, fmt.Errorf("s3 client for %s: %w", b.addr, err)
	}
	return minio.Core{Client: cl}, nil
}

// ctxTransport sends every request with ctx.
type ctxTransport struct {
	ctx context.Context
	rt  http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.rt.RoundTrip(r.WithContext(t.ctx))
}

// count sums the sizes under the prefix.
func (b *Backend) count(ctx context.Context) (int64, error) {
	var n int64
	err := b.walk(ctx, "", func(_ string, size int64) error { n += size; return nil })
	return n, err
}

// usage returns the bytes used under the prefix, counting them when the
// count is missing or stale.
func (b *Backend) usage(ctx context.Context) (int64, error) {
	b.mu.Lock()
	if b.usedKnown && time.Since(b.countedAt) < RecountInterval {
		u := b.used
		b.mu.Unlock()
		return u, nil
	}
	b.mu.Unlock()
	n, err := b.count(ctx)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used, b.usedKnown, b.countedAt = n, true, time.Now()
	return n, nil
}

// reserve accounts delta more bytes against the quota, or says ErrFull.
func (b *Backend) reserve(ctx context.Context, key string, delta int64) error {
	if _, err := b.usage(ctx); err != nil {
		return b.fail(ctx, "put", key, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if delta > 0 && b.used+delta > b.quota {
		return backends.Errorf(b.name, "put", key, backends.ErrFull,
			"quota %d bytes, %d used, value needs %d more", b.quota, b.used, delta)
	}
	b.used += delta
	return nil
}

func (b *Backend) release(delta int64) {
	if b.quota <= 0 || delta == 0 {
		return
	}
	b.mu.Lock()
	b.used -= delta
	if b.used < 0 {
		b.used = 0
	}
	b.mu.Unlock()
}

// Probe implements backends.Backend: a bucket HEAD (creating the bucket if
// it is gone), plus the quota figures when a quota is set.
func (b *Backend) Probe(ctx context.Context) (backends.ProbeResult, error) {
	if err := b.ready(ctx, "probe", ""); err != nil {
		return backends.ProbeResult{}, err
	}
	start := time.Now()
	if err := b.ensureBucket(ctx); err != nil {
		return backends.ProbeResult{}, err
	}
	r := backends.ProbeResult{Latency: time.Since(start)}
	if b.quota > 0 {
		used, err := b.usage(ctx)
		if err != nil {
			return backends.ProbeResult{}, b.fail(ctx, "probe", "", err)
		}
		free := b.quota - used
		if free < 0 {
			free = 0
		}
		if used > b.quota {
			used = b.quota
		}
		r.Capacity = backends.Capacity{Known: true, Used: used, Limit: b.quota, Free: free}
	}
	return r, nil
}

// Close implements backends.Backend.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}
