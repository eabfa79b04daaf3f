package etcdkv

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/healstore/healstore/metastore"
)

// SchemaVersion is the metadata schema this code writes and reads, kept
// in the key <prefix>schema.
const SchemaVersion = 1

const schemaMagic = "healstore-metastore"

// Defaults for the options.
const (
	DefaultRequestTimeout = 10 * time.Second
	DefaultDialTimeout    = 5 * time.Second
)

// scanPage is the number of keys one range request returns; records can
// be large (an object lists every stripe), so pages stay small.
const scanPage = 128

// maxSendBytes lets the client send a batch as large as any server limit
// healstore recommends; the server's --max-request-bytes decides.
const maxSendBytes = 256 << 20

type schemaRec struct {
	Format string `json:"format"`
	Schema int    `json:"schema"`
}

// Option configures Open.
type Option func(*options)

type options struct {
	requestTimeout time.Duration
	dialTimeout    time.Duration
	tls            *tls.Config
	username       string
	password       string
	auth           bool
}

// WithRequestTimeout bounds every call (default DefaultRequestTimeout).
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.requestTimeout = d } }

// WithDialTimeout bounds connection setup (default DefaultDialTimeout).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithTLS connects with TLS to every endpoint written host:port or
// https://host:port. An endpoint written http://host:port is dialled in
// plain text whatever the option says (etcd's client decides by the
// first endpoint's scheme for all of them), so callers that want TLS must
// not write http://. An https:// endpoint without WithTLS uses TLS with
// the system's roots.
//
// cfg.ServerName, when set, is the name verified in every server's
// certificate; otherwise each endpoint's host is. (gRPC replaces the
// config's ServerName with the endpoint's host, so Open verifies the
// certificate itself, with cfg.RootCAs, when ServerName is set.)
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithAuth authenticates with etcd's user/password auth. The password is
// never logged or put in an error. An empty password is refused by Open
// (etcd's client would silently connect without a user).
func WithAuth(username, password string) Option {
	return func(o *options) { o.username, o.password, o.auth = username, password, true }
}

// ErrAuth is matched (errors.Is) by the errors of calls etcd refused for
// want of authentication or permission: a wrong user or password, no user
// on a cluster with authentication enabled, or a user without a role
// granting the store's prefix.
var ErrAuth = errors.New("etcd refused authentication or permission")

// ErrPermission is the ErrAuth of a user etcd knows that has no role
// granting the key asked for. It matches ErrAuth too.
var ErrPermission = fmt.Errorf("%w: no permission", ErrAuth)

// ErrTLS is matched (errors.Is) by Open's error when no endpoint could be
// reached because the TLS handshake failed (a server certificate the
// configured roots do not verify, a name mismatch, a client certificate
// the server refused or did not get) or because one side speaks TLS and
// the other does not. Such an error also matches metastore.ErrUnavailable.
var ErrTLS = errors.New("TLS with etcd failed")

// KV is a metastore.KV on etcd. Safe for concurrent use.
type KV struct {
	cli       *clientv3.Client
	endpoints string
	prefix    string // ends in '/'
	data      string // prefix + "d/": every user key lives under it
	timeout   time.Duration
	username  string // "" without WithAuth
	closed    atomic.Bool
	// life ends at Close and cancels every call in flight, so none waits
	// out the client's retry back-off on a closing connection.
	life    context.Context
	endLife context.CancelFunc
}

var _ metastore.KV = (*KV)(nil)

// Open connects to etcd and checks (or, under an empty prefix, writes) the
// schema key. prefix must be non-empty; a '/' is appended when missing, so
// "healstore" and "healstore/" name the same store and never overlap
// "healstore2/".
//
// Errors: metastore.ErrUnavailable when etcd does not answer in time;
// metastore.ErrSchema when the prefix holds a newer schema or keys that
// are not healstore metadata.
func Open(ctx context.Context, endpoints []string, prefix string, opts ...Option) (*KV, error) {
	o := options{requestTimeout: DefaultRequestTimeout, dialTimeout: DefaultDialTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: etcd: no endpoints", metastore.ErrInvalid)
	}
	if prefix == "" {
		return nil, fmt.Errorf("%w: etcd: empty key prefix (healstore keeps its keys under a prefix of their own)", metastore.ErrInvalid)
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if o.auth && (o.username == "" || o.password == "") {
		return nil, fmt.Errorf("%w: etcd: authentication needs a user name and a non-empty password", metastore.ErrInvalid)
	}
	o.tls = clientTLS(o.tls)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:          endpoints,
		DialTimeout:        o.dialTimeout,
		TLS:                o.tls,
		Username:           o.username,
		Password:           o.password,
		Logger:             zap.NewNop(), // errors reach callers; the client's own retry chatter is noise
		MaxCallSendMsgSize: maxSendBytes,
	})
	eps := strings.Join(endpoints, ",")
	if err != nil {
		// clientv3.New authenticates (with WithAuth) before it returns.
		if authError(err) {
			return nil, fmt.Errorf("%w: etcd %s: user %q: %v", ErrAuth, eps, o.username, err)
		}
		err = fmt.Errorf("%w: etcd %s: %v", metastore.ErrUnavailable, eps, err)
		return nil, diagnoseOpen(ctx, endpoints, o.tls, err)
	}
	k := &KV{cli: cli, endpoints: eps, prefix: prefix, data: prefix + "d/", timeout: o.requestTimeout, username: o.username}
	k.life, k.endLife = context.WithCancel(context.Background())
	if err := k.checkSchema(ctx); err != nil {
		k.endLife()
		cli.Close()
		return nil, diagnoseOpen(ctx, endpoints, o.tls, err)
	}
	return k, nil
}

// Client returns the etcd client, for what the KV interface does not
// cover (leases and leader election). Keys of such uses must live under
// Prefix() but outside Prefix()+"d/".
func (k *KV) Client() *clientv3.Client { return k.cli }

// Prefix is the normalized key prefix (ending in '/').
func (k *KV) Prefix() string { return k.prefix }

func (k *KV) checkSchema(ctx context.Context) error {
	key := k.prefix + "schema"
	for attempt := 0; attempt < 3; attempt++ {
		cctx, cancel := k.call(ctx)
		resp, err := k.cli.Get(cctx, key)
		cancel()
		if err != nil {
			return k.wrap(ctx, "read schema", err)
		}
		if len(resp.Kvs) == 1 {
			var rec schemaRec
			if json.Unmarshal(resp.Kvs[0].Value, &rec) != nil || rec.Format != schemaMagic {
				return fmt.Errorf("%w: etcd %s prefix %q holds a schema key that is not healstore's", metastore.ErrSchema, k.endpoints, k.prefix)
			}
			if rec.Schema > SchemaVersion {
				return fmt.Errorf("%w: etcd %s prefix %q was written by a newer healstore (schema %d; this one reads up to %d); upgrade healstore",
					metastore.ErrSchema, k.endpoints, k.prefix, rec.Schema, SchemaVersion)
			}
			if rec.Schema < 1 {
				return fmt.Errorf("%w: etcd %s prefix %q: invalid schema version %d", metastore.ErrSchema, k.endpoints, k.prefix, rec.Schema)
			}
			return nil
		}
		cctx, cancel = k.call(ctx)
		any, err := k.cli.Get(cctx, k.prefix, clientv3.WithPrefix(), clientv3.WithLimit(1), clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			return k.wrap(ctx, "read schema", err)
		}
		if len(any.Kvs) > 0 {
			return fmt.Errorf("%w: etcd %s prefix %q holds keys that are not healstore metadata (no schema key; first %q)",
				metastore.ErrSchema, k.endpoints, k.prefix, any.Kvs[0].Key)
		}
		rec, _ := json.Marshal(schemaRec{Format: schemaMagic, Schema: SchemaVersion})
		cctx, cancel = k.call(ctx)
		txn, err := k.cli.Txn(cctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(rec))).Commit()
		cancel()
		if err != nil {
			return k.wrap(ctx, "write schema", err)
		}
		if txn.Succeeded {
			return nil
		}
		// Another process created it at the same moment: read it back.
	}
	return fmt.Errorf("%w: etcd %s prefix %q: schema key keeps changing", metastore.ErrConflict, k.endpoints, k.prefix)
}

// wrap turns a client error into one of metastore's kinds. ctx is the
// caller's context: its end is reported as such, not as unavailability.
func (k *KV) wrap(ctx context.Context, op string, err error) error {
	if k.closed.Load() {
		return fmt.Errorf("etcd %s: %s: %w", k.endpoints, op, metastore.ErrClosed)
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("etcd %s: %s: %w", k.endpoints, op, cerr)
	}
	// gRPC enforces the caller's deadline itself and can give up a moment
	// before ctx's timer fires (ctx.Err still nil): the caller's time ran
	// out all the same, so say so rather than blame etcd.
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return fmt.Errorf("etcd %s: %s: %w (%v)", k.endpoints, op, context.DeadlineExceeded, err)
	}
	if authError(err) {
		who := "no user (the cluster has authentication enabled)"
		if k.username != "" {
			who = fmt.Sprintf("user %q", k.username)
		}
		kind := ErrAuth
		if errors.Is(err, rpctypes.ErrPermissionDenied) {
			kind = ErrPermission
		}
		return fmt.Errorf("%w: etcd %s: %s: %s: %v", kind, k.endpoints, op, who, err)
	}
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w: etcd %s: %s: more operations than the server's --max-txn-ops (healstore needs 10000 or more): %v",
			metastore.ErrTooLarge, k.endpoints, op, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%w: etcd %s: %s: larger than the server's --max-request-bytes (healstore needs 33554432 or more): %v",
			metastore.ErrTooLarge, k.endpoints, op, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail), errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrLeaderChanged):
		return fmt.Errorf("%w: etcd %s: %s: %v", metastore.ErrUnavailable, k.endpoints, op, err)
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return fmt.Errorf("%w: etcd %s: %s: %v", metastore.ErrUnavailable, k.endpoints, op, err)
		case codes.ResourceExhausted:
			return fmt.Errorf("%w: etcd %s: %s: %v", metastore.ErrTooLarge, k.endpoints, op, err)
		}
	}
	return fmt.Errorf("etcd %s: %s: %w", k.endpoints, op, err)
}

// authError tells whether etcd refused a call for want of authentication
// or permission.
func authError(err error) bool {
	for _, e := range []error{rpctypes.ErrAuthFailed, rpctypes.ErrUserEmpty, rpctypes.ErrPermissionDenied,
		rpctypes.ErrInvalidAuthToken} {
		if errors.Is(err, e) {
			return true
		}
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unauthenticated, codes.PermissionDenied:
			return true
		}
	}
	return false
}

// call derives the context of one request: the caller's, bounded by the
// request timeout, and ended by Close.
func (k *KV) call(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithTimeout(ctx, k.timeout)
	stop := context.AfterFunc(k.life, cancel)
	return cctx, func() { stop(); cancel() }
}

func (k *KV) enter(ctx context.Context) error {
	if k.closed.Load() {
		return fmt.Errorf("etcd %s: %w", k.endpoints, metastore.ErrClosed)
	}
	return ctx.Err()
}

// Get implements metastore.KV.
func (k *KV) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := k.enter(ctx); err != nil {
		return nil, err
	}
	cctx, cancel := k.call(ctx)
	defer cancel()
	resp, err := k.cli.Get(cctx, k.data+string(key))
	if err != nil {
		return nil, k.wrap(ctx, fmt.Sprintf("get %q", key), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("key %q: %w", key, metastore.ErrNotFound)
	}
	return append([]byte{}, resp.Kvs[0].Value...), nil
}

// Scan implements metastore.KV with paged range requests; each page reads
// the latest revision, so fn may write while the walk goes on.
func (k *KV) Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error {
	from := k.data + string(metastore.ScanStart(prefix, start))
	var end string
	if e := metastore.PrefixEnd(prefix); e != nil {
		end = k.data + string(e)
	} else {
		end = clientv3.GetPrefixRangeEnd(k.data)
	}
	for {
		if err := k.enter(ctx); err != nil {
			return err
		}
		cctx, cancel := k.call(ctx)
		resp, err := k.cli.Get(cctx, from, clientv3.WithRange(end), clientv3.WithLimit(scanPage))
		cancel()
		if err != nil {
			return k.wrap(ctx, fmt.Sprintf("scan %q", prefix), err)
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key[len(k.data):], kv.Value); err != nil {
				if errors.Is(err, metastore.ErrStop) {
					return nil
				}
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Commit implements metastore.KV as one etcd transaction.
func (k *KV) Commit(ctx context.Context, b *metastore.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if err := k.enter(ctx); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	cmps := make([]clientv3.Cmp, 0, len(b.Conds()))
	for _, c := range b.Conds() {
		key := k.data + string(c.Key)
		if c.Missing {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		} else {
			// A value compare on a missing key fails in etcd, as
			// ExpectValue requires.
			cmps = append(cmps, clientv3.Compare(clientv3.Value(key), "=", string(c.Value)))
		}
	}
	ops := make([]clientv3.Op, 0, b.Len())
	for _, op := range b.Ops() {
		key := k.data + string(op.Key)
		if op.Delete {
			ops = append(ops, clientv3.OpDelete(key))
		} else {
			ops = append(ops, clientv3.OpPut(key, string(op.Value)))
		}
	}
	cctx, cancel := k.call(ctx)
	defer cancel()
	resp, err := k.cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return k.wrap(ctx, fmt.Sprintf("commit of %d ops", len(ops)), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcd %s: a batch condition failed: %w", k.endpoints, metastore.ErrConflict)
	}
	return nil
}

// Close implements metastore.KV; calls in flight end with ErrClosed.
func (k *KV) Close() error {
	if k.closed.Swap(true) {
		return fmt.Errorf("etcd %s: %w", k.endpoints, metastore.ErrClosed)
	}
	k.endLife()
	if err := k.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client %s: %w", k.endpoints, err)
	}
	return nil
}
