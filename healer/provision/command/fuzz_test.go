package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/healstore/healstore/backends"
)

// secretKeys are the reply keys whose values are secrets: "secret" (which
// encoding/json matches in any case) and the names a script might wrongly
// put a password under.
func isSecretKey(k string) bool {
	if strings.EqualFold(k, "secret") {
		return true
	}
	switch strings.ToLower(k) {
	case "password", "secret_key", "secretkey", "secret_access_key":
		return true
	}
	return false
}

// secretValues walks the top-level object of out as far as it is valid
// JSON and returns the values held under secret keys (raw and, for
// strings, unquoted), leaving out values that also occur under another
// key: Validate may name a spec field's value, and a secret that is also
// the backend's name is not the reply's fault.
func secretValues(out []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimSpace(out)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var secrets, others []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			break
		}
		vals := []string{string(raw)}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			vals = append(vals, s)
		}
		if isSecretKey(key) {
			secrets = append(secrets, vals...)
		} else {
			others = append(others, key, string(raw))
		}
	}
	var out2 []string
	for _, s := range secrets {
		if len(s) < 6 {
			continue // too short to tell a leak from a coincidence
		}
		alsoElsewhere := false
		for _, o := range others {
			alsoElsewhere = alsoElsewhere || strings.Contains(o, s)
		}
		if !alsoElsewhere {
			out2 = append(out2, s)
		}
	}
	return out2
}

// FuzzParseReply feeds parseReply what a user's provisioning program might
// print. It must not panic; every rejection matches ErrBadOutput and never
// shows a secret the output held; an accepted reply is a valid spec whose
// secret has a ref, and printed again as JSON it parses to the same.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		`{"name":"hs-data-01","kind":"zdb","address":"[2a10:b600::1]:9900","namespace":"81-1-hs","node":"11","farm":"81","quota":10737418240,"secret":"s3cr3t-Pw-0001"}` + "\n",
		`{"name":"dir1","kind":"local","path":"/tmp/x","secret_ref":"given-ref","secret":"s3cr3t-Pw-0001"}`,
		`{"name":"a","kind":"local","path":"/x"}`,
		"",
		"deployed ok, password s3cr3t-Pw-0001",
		`{"name":"a","kind":"zdb","secret":s3cr3t-Pw-0001}`,
		`{"name":"a","kind":"local","path":"/x"} {"name":"b"}`,
		`{"name":"a","kind":"zdb","address":"h:1","namespace":"n","password":"s3cr3t-Pw-0001"}`,
		`{"name":"a","kind":"zdb","adress":"h:1","namespace":"n"}`,
		`{"name":"a","kind":"zdb","address":"h:1","namespace":"n","quota":"big"}`,
		`{"name":"a","kind":"zdb","namespace":"n","secret":"s3cr3t-Pw-0001"}`,
		`{"name":"a","kind":"zdb","secret":"s3cr3t-Pw`,
		`{"name":"a","kind":"zdb","address":"h:1","namespace":"n","quota":1000,"secret":"s3cr3t-Pw-0001"}`,
		`{"name":"a","kind":"s3","address":"h:1","bucket":"b","access_key":"AK","secret":12345678901}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		spec, secret, err := parseReply(out)
		if err != nil {
			if !errors.Is(err, ErrBadOutput) {
				t.Fatalf("error %v does not match ErrBadOutput", err)
			}
			if spec != (backends.Spec{}) || secret != "" {
				t.Fatalf("error %v, yet a spec or secret came back", err)
			}
			for _, s := range secretValues(out) {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error %q shows the secret %q", err, s)
				}
			}
			return
		}
		if verr := spec.Validate(); verr != nil {
			t.Fatalf("accepted an invalid spec: %v", verr)
		}
		if secret != "" && spec.SecretRef == "" {
			t.Fatalf("accepted a secret without a ref to store it under")
		}
		again, err := json.Marshal(reply{Spec: spec, Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		spec2, secret2, err := parseReply(again)
		if err != nil {
			t.Fatalf("accepted reply printed again is refused: %v", err)
		}
		if spec2 != spec || secret2 != secret {
			t.Fatalf("printed again, the reply parses to %+v, want %+v (secret equal: %v)", spec2, spec, secret2 == secret)
		}
	})
}
