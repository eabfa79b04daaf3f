package backends

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func TestSpecRoundTrips(t *testing.T) {
	specs := []Spec{
		{Name: "disk1", Kind: KindLocal, Path: "/srv/healstore/disk1", Quota: 1 << 40, Node: "n1", Farm: "f1"},
		{Name: "zdb-7", Kind: KindZDB, Address: "[2a02:1802:5e::223]:9900", Namespace: "ns-7", SecretRef: "zdb-7", Node: "grid-node-7", Spare: true},
		{Name: "s3.a", Kind: KindS3, Address: "s3.example.org", Bucket: "bkt", Prefix: "hs/", Region: "eu-west-1", TLS: true, AccessKey: "AKIA", SecretRef: "s3a"},
	}
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON Spec
		if err := json.Unmarshal(j, &fromJSON); err != nil || fromJSON != s {
			t.Fatalf("JSON round trip of %s: %+v, %v", s.Name, fromJSON, err)
		}
		tm, err := toml.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var fromTOML Spec
		if err := toml.Unmarshal(tm, &fromTOML); err != nil || fromTOML != s {
			t.Fatalf("TOML round trip of %s: %+v, %v\n%s", s.Name, fromTOML, err, tm)
		}
		// Never a secret in either form: only the ref.
		if strings.Contains(string(j), "password") || strings.Contains(string(tm), "secret_key") {
			t.Fatalf("spec %s serialises a secret field", s.Name)
		}
	}
}

func TestSpecFromTOML(t *testing.T) {
	const doc = `
name = "zdb-1"
kind = "zdb"
address = "10.1.2.3:9900"
namespace = "hs1"
secret_ref = "zdb-1"
node = "node-12"
farm = "farm-3"
`
	var s Spec
	if err := toml.Unmarshal([]byte(doc), &s); err != nil {
		t.Fatal(err)
	}
	want := Spec{Name: "zdb-1", Kind: KindZDB, Address: "10.1.2.3:9900", Namespace: "hs1", SecretRef: "zdb-1", Node: "node-12", Farm: "farm-3"}
	if s != want {
		t.Fatalf("got %+v", s)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Name: "", Kind: KindLocal, Path: "/x"}, "name"},
		{Spec{Name: "-x", Kind: KindLocal, Path: "/x"}, "name"},
		{Spec{Name: "x"}, "kind is missing"},
		{Spec{Name: "x", Kind: "nfs"}, "unknown kind"},
		{Spec{Name: "x", Kind: KindLocal}, "path"},
		{Spec{Name: "x", Kind: KindZDB, Namespace: "n"}, "address"},
		{Spec{Name: "x", Kind: KindZDB, Address: "h:1"}, "namespace"},
		{Spec{Name: "x", Kind: KindS3, Address: "h:1"}, "bucket"},
		{Spec{Name: "x", Kind: KindS3, Address: "h:1", Bucket: "hs"}, `bucket "hs": Bucket name cannot be shorter than 3 characters`},
		{Spec{Name: "x", Kind: KindS3, Address: "h:1", Bucket: "-healstore"}, `bucket "-healstore"`},
		{Spec{Name: "x", Kind: KindS3, Address: "h:1", Bucket: "heal store"}, `bucket "heal store"`},
		{Spec{Name: "x", Kind: KindS3, Address: "h:1", Bucket: "heal..store"}, `bucket "heal..store"`},
		{Spec{Name: "x", Kind: KindS3, Address: "h:1", Bucket: "10.1.2.3"}, `bucket "10.1.2.3"`},
		{Spec{Name: "x", Kind: KindLocal, Path: "/x", Quota: -1}, "quota"},
	} {
		err := c.spec.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %s", c.spec, err, c.want)
		}
	}
}

func TestDomain(t *testing.T) {
	s := Spec{Name: "b", Node: "n", Farm: "f"}
	if s.Domain("node") != "node:n" || s.Domain("farm") != "farm:f" || s.Domain("") != "node:n" {
		t.Fatalf("domains of a labelled spec: %s %s", s.Domain("node"), s.Domain("farm"))
	}
	bare := Spec{Name: "b"}
	if bare.Domain("node") != "backend:b" || bare.Domain("farm") != "backend:b" {
		t.Fatal("an unlabelled backend is not its own domain")
	}
}

func TestErrorFormat(t *testing.T) {
	cause := errors.New("connection refused")
	err := Wrap("zdb-1", "get", "shards/x.0", ErrUnavailable, cause)
	if err.Error() != "backend zdb-1: get shards/x.0: unavailable: connection refused" {
		t.Fatalf("Error() = %q", err.Error())
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, cause) {
		t.Fatal("Wrap hides the kind or the cause")
	}
	if e := Wrap("b", "put", "", ErrFull, nil); e.Error() != "backend b: put: backend full" || !errors.Is(e, ErrFull) {
		t.Fatalf("nil cause: %q", e.Error())
	}
}

// TestSpecAddress: a zdb address that is not host:port is a bad spec (it
// was found only when the backend opened, as an outage), and an address
// with user:password@ is refused without being shown: neither client logs
// in with it, and every error about the backend names its address.
func TestSpecAddress(t *testing.T) {
	for _, s := range []Spec{
		{Name: "z", Kind: KindZDB, Address: "nohostport", Namespace: "n"},
		{Name: "z", Kind: KindZDB, Address: "h:99999", Namespace: "n"},
		{Name: "z", Kind: KindZDB, Address: "u:hunter2@h:9900", Namespace: "n"},
		{Name: "s", Kind: KindS3, Address: "AK:hunter2@s3.example.org", Bucket: "bkt"},
	} {
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), "address") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%+v: %v; want the address refused, no password shown", s, err)
		}
	}
	for _, s := range []Spec{
		{Name: "z", Kind: KindZDB, Address: "[::1]:9900", Namespace: "n"},
		{Name: "s", Kind: KindS3, Address: "s3.example.org", Bucket: "bkt"},
	} {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
}
