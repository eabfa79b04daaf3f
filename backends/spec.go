package backends

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Kinds of backend.
const (
	KindLocal = "local"
	KindZDB   = "zdb"
	KindS3    = "s3"
)

// Spec describes one backend. It round-trips through TOML and JSON. It never
// holds a secret itself: SecretRef names an entry in the secret store (a
// 0600 file), which Open resolves.
type Spec struct {
	Name string `toml:"name" json:"name"`
	Kind string `toml:"kind" json:"kind"`
	// Path is the directory of a local backend.
	Path string `toml:"path,omitempty" json:"path,omitempty"`
	// Address is host:port of a zdb server or the endpoint of an S3 server.
	Address string `toml:"address,omitempty" json:"address,omitempty"`
	// Namespace is the 0-db namespace.
	Namespace string `toml:"namespace,omitempty" json:"namespace,omitempty"`
	// Bucket and Prefix place an S3 backend's keys.
	Bucket string `toml:"bucket,omitempty" json:"bucket,omitempty"`
	Prefix string `toml:"prefix,omitempty" json:"prefix,omitempty"`
	Region string `toml:"region,omitempty" json:"region,omitempty"`
	TLS    bool   `toml:"tls,omitempty" json:"tls,omitempty"`
	// AccessKey is the S3 access key id (not a secret by itself).
	AccessKey string `toml:"access_key,omitempty" json:"access_key,omitempty"`
	// SecretRef names the secret-store entry holding the zdb namespace
	// password or the S3 secret key.
	SecretRef string `toml:"secret_ref,omitempty" json:"secret_ref,omitempty"`
	// Quota in bytes, 0 = none; used for capacity where the store cannot
	// say, and enforced by local.
	Quota int64 `toml:"quota,omitempty" json:"quota,omitempty"`
	// Failure-domain labels.
	Node string `toml:"node,omitempty" json:"node,omitempty"`
	Farm string `toml:"farm,omitempty" json:"farm,omitempty"`
	// Spare backends receive shards only as rebuild or retry targets.
	Spare bool `toml:"spare,omitempty" json:"spare,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate reports the first thing wrong with the spec, naming the field.
func (s Spec) Validate() error {
	if !nameRE.MatchString(s.Name) {
		return fmt.Errorf("backend name %q: must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit", s.Name)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("backend %s: %s", s.Name, fmt.Sprintf(format, args...))
	}
	switch s.Kind {
	case KindLocal:
		if s.Path == "" {
			return bad("kind local needs path")
		}
	case KindZDB:
		if s.Address == "" {
			return bad("kind zdb needs address (host:port)")
		}
		if err := checkAddress(s.Address); err != nil {
			return bad("%v", err)
		}
		if _, port, err := net.SplitHostPort(s.Address); err != nil {
			return bad("address %q is not host:port: %v", s.Address, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("address %q: port %q is not a number from 1 to 65535", s.Address, port)
		}
		if s.Namespace == "" {
			return bad("kind zdb needs namespace")
		}
	case KindS3:
		if s.Address == "" {
			return bad("kind s3 needs address (endpoint host:port)")
		}
		if err := checkAddress(s.Address); err != nil {
			return bad("%v", err)
		}
		if s.Bucket == "" {
			return bad("kind s3 needs bucket")
		}
		// The S3 client refuses these names, but only once the backend
		// is registered and its secret saved; checked here, a bad name
		// changes nothing. (minio-go's rule, not S3's stricter one, so no
		// bucket that worked before is refused now.)
		if err := s3utils.CheckValidBucketName(s.Bucket); err != nil {
			return bad("bucket %q: %v", s.Bucket, err)
		}
	case "":
		return bad("kind is missing (local, zdb or s3)")
	default:
		return bad("unknown kind %q (local, zdb or s3)", s.Kind)
	}
	if s.Quota < 0 {
		return bad("quota %d is negative", s.Quota)
	}
	return nil
}

// KindField is a Spec field that applies to some kinds of backend only.
// Every field not listed by KindFields applies to all kinds.
type KindField struct {
	// Key is the field's TOML and JSON key ("bucket", "access_key").
	Key string
	// Kinds are the kinds it applies to.
	Kinds []string
	set   func(Spec) bool
}

// kindFields is the one list of which field belongs to which kind: the
// backends read nothing else (local never looks at bucket), so a field
// set for another kind would be dropped silently.
var kindFields = []KindField{
	{"path", []string{KindLocal}, func(s Spec) bool { return s.Path != "" }},
	{"address", []string{KindZDB, KindS3}, func(s Spec) bool { return s.Address != "" }},
	{"namespace", []string{KindZDB}, func(s Spec) bool { return s.Namespace != "" }},
	{"bucket", []string{KindS3}, func(s Spec) bool { return s.Bucket != "" }},
	{"prefix", []string{KindS3}, func(s Spec) bool { return s.Prefix != "" }},
	{"region", []string{KindS3}, func(s Spec) bool { return s.Region != "" }},
	{"tls", []string{KindS3}, func(s Spec) bool { return s.TLS }},
	{"access_key", []string{KindS3}, func(s Spec) bool { return s.AccessKey != "" }},
	{"secret_ref", []string{KindZDB, KindS3}, func(s Spec) bool { return s.SecretRef != "" }},
}

// KindFields returns the fields that apply to some kinds only, in the
// order of Spec.
func KindFields() []KindField {
	out := make([]KindField, len(kindFields))
	for i, f := range kindFields {
		f.Kinds = slices.Clone(f.Kinds)
		out[i] = f
	}
	return out
}

// AppliesTo reports whether the field means something for kind.
func (f KindField) AppliesTo(kind string) bool { return slices.Contains(f.Kinds, kind) }

// NotFor says that the field does not apply to kind, for an error that
// names the field first: "does not apply to a local backend (only to s3)".
func (f KindField) NotFor(kind string) string {
	article := "a"
	if kind == KindS3 {
		article = "an"
	}
	return fmt.Sprintf("does not apply to %s %s backend (only to %s)", article, kind, strings.Join(f.Kinds, ", "))
}

// ValidateInput is Validate for a spec given anew (the config file, the
// CLI, the daemon's API, recover): it also refuses a field of another kind
// (bucket on a local backend), which the backend would ignore while the
// user believes the setting took effect. A zero value is not set. Opening a
// spec checks Validate only, so a record an older build stored with such a
// field still opens.
func (s Spec) ValidateInput() error {
	if err := s.Validate(); err != nil {
		return err
	}
	for _, f := range kindFields {
		if f.set(s) && !f.AppliesTo(s.Kind) {
			return fmt.Errorf("backend %s: %s %s", s.Name, f.Key, f.NotFor(s.Kind))
		}
	}
	return nil
}

// checkAddress refuses user:password@ in an address without showing it:
// neither client logs in with it (secrets go in the secrets file), and
// every error about the backend names its address.
func checkAddress(addr string) error {
	if strings.Contains(addr, "@") {
		return errors.New("address holds a user name or password (user:password@, not shown); " +
			"write host:port and put the secret in the secrets file, named by secret_ref")
	}
	return nil
}

// Domain returns the backend's failure domain at level "node" or "farm".
// A backend without the label is its own domain (its name).
func (s Spec) Domain(level string) string {
	switch level {
	case "farm":
		if s.Farm != "" {
			return "farm:" + s.Farm
		}
	default:
		if s.Node != "" {
			return "node:" + s.Node
		}
	}
	return "backend:" + s.Name
}

// SecretLookup resolves a SecretRef to the secret. It returns an error that
// names the ref (never the secret) when the ref is unknown.
type SecretLookup func(ref string) (string, error)

// ErrNoSecret is returned by a SecretLookup for an unknown ref.
var ErrNoSecret = errors.New("secret not found")
