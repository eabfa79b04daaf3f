package backends

import (
	"encoding/json"
	"errors"
	"reflect"
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

// TestSpecValidateInputRefusesFieldsOfAnotherKind: a field the spec's kind
// does not read (bucket on a local backend) is refused by ValidateInput,
// naming the field, the backend and its kind, while Validate, which
// opening a stored record checks, still takes it: a record an older build
// stored with such a field must still open. A zero value is not set.
func TestSpecValidateInputRefusesFieldsOfAnotherKind(t *testing.T) {
	local := Spec{Name: "b3", Kind: KindLocal, Path: "/srv/b3"}
	zdb := Spec{Name: "z", Kind: KindZDB, Address: "h:9900", Namespace: "ns"}
	s3 := Spec{Name: "s", Kind: KindS3, Address: "h:9000", Bucket: "bkt"}
	with := func(s Spec, f func(*Spec)) Spec { f(&s); return s }
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{with(local, func(s *Spec) { s.Bucket = "x" }), "backend b3: bucket does not apply to a local backend (only to s3)"},
		{with(local, func(s *Spec) { s.TLS = true }), "backend b3: tls does not apply to a local backend (only to s3)"},
		{with(local, func(s *Spec) { s.Address = "h:1" }), "backend b3: address does not apply to a local backend (only to zdb, s3)"},
		{with(local, func(s *Spec) { s.SecretRef = "r" }), "backend b3: secret_ref does not apply to a local backend (only to zdb, s3)"},
		{with(zdb, func(s *Spec) { s.Path = "/x" }), "backend z: path does not apply to a zdb backend (only to local)"},
		{with(zdb, func(s *Spec) { s.AccessKey = "AK" }), "backend z: access_key does not apply to a zdb backend (only to s3)"},
		{with(zdb, func(s *Spec) { s.Region = "eu" }), "backend z: region does not apply to a zdb backend (only to s3)"},
		{with(zdb, func(s *Spec) { s.Prefix = "p/" }), "backend z: prefix does not apply to a zdb backend (only to s3)"},
		{with(s3, func(s *Spec) { s.Namespace = "ns" }), "backend s: namespace does not apply to an s3 backend (only to zdb)"},
		{with(s3, func(s *Spec) { s.Path = "/x" }), "backend s: path does not apply to an s3 backend (only to local)"},
	} {
		err := c.spec.ValidateInput()
		if err == nil || err.Error() != c.want {
			t.Errorf("ValidateInput(%+v) = %v, want %q", c.spec, err, c.want)
		}
		if err := c.spec.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v; a stored record with the field must still open", c.spec, err)
		}
	}
	// Every field of its own kind, those of every kind, and zero values of
	// the others pass.
	for _, s := range []Spec{
		{Name: "disk1", Kind: KindLocal, Path: "/srv/d", Quota: 1, Node: "n", Farm: "f", Spare: true, TLS: false, Bucket: ""},
		{Name: "zdb-7", Kind: KindZDB, Address: "[::1]:9900", Namespace: "ns", SecretRef: "r", Quota: 1, Node: "n", Farm: "f", Spare: true},
		{Name: "s3.a", Kind: KindS3, Address: "s3.example.org", Bucket: "bkt", Prefix: "hs/", Region: "eu-west-1", TLS: true, AccessKey: "AK", SecretRef: "r", Quota: 1, Node: "n", Farm: "f", Spare: true},
	} {
		if err := s.ValidateInput(); err != nil {
			t.Errorf("ValidateInput(%+v) = %v", s, err)
		}
	}
	// What Validate refuses, ValidateInput refuses too.
	if err := (Spec{Name: "b", Kind: KindLocal, Bucket: "x"}).ValidateInput(); err == nil || !strings.Contains(err.Error(), "needs path") {
		t.Errorf("ValidateInput of a local spec without path: %v", err)
	}
}

// TestKindFieldsCoverSpec: every Spec field is either listed by KindFields
// or applies to every kind, so a field added to Spec is classified, and
// each listed field is seen as set when its struct field is.
func TestKindFieldsCoverSpec(t *testing.T) {
	allKinds := map[string]bool{"name": true, "kind": true, "quota": true, "node": true, "farm": true, "spare": true}
	byKey := map[string]KindField{}
	for _, f := range KindFields() {
		byKey[f.Key] = f
	}
	typ := reflect.TypeOf(Spec{})
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("toml"), ",")
		f, limited := byKey[key]
		if limited == allKinds[key] {
			t.Errorf("field %s (%s): listed by KindFields %v, of all kinds %v; want exactly one", typ.Field(i).Name, key, limited, allKinds[key])
			continue
		}
		if !limited {
			continue
		}
		delete(byKey, key)
		for _, kind := range []string{KindLocal, KindZDB, KindS3} {
			if f.AppliesTo(kind) {
				continue
			}
			// A valid spec of that kind, with only this field added.
			s := map[string]Spec{
				KindLocal: {Name: "b", Kind: KindLocal, Path: "/x"},
				KindZDB:   {Name: "b", Kind: KindZDB, Address: "h:1", Namespace: "n"},
				KindS3:    {Name: "b", Kind: KindS3, Address: "h:1", Bucket: "bkt"},
			}[kind]
			v := reflect.ValueOf(&s).Elem().Field(i)
			switch v.Kind() {
			case reflect.String:
				v.SetString("x")
			case reflect.Bool:
				v.SetBool(true)
			default:
				t.Fatalf("field %s: no test value for %s", typ.Field(i).Name, v.Kind())
			}
			if err := s.ValidateInput(); err == nil || !strings.Contains(err.Error(), key+" does not apply") {
				t.Errorf("%s on a %s backend: %v", key, kind, err)
			}
		}
	}
	for key := range byKey {
		t.Errorf("KindFields lists %q, which is no Spec field", key)
	}
}
